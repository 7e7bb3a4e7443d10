// Package report is what the user sees of training: the Keras-like line at
// the end of each epoch, a progress bar during the epoch when stdout is a
// terminal, the history of metrics in the shape of Keras's
// History.history, and a PNG of the loss curves.
//
// # Epoch lines and SageMaker metrics
//
// [EpochLine] writes one line per epoch in the format of Keras 3's
// verbose=2, with the epoch number on the same line:
//
//	Epoch 3/10 - 32/32 - 1s - 3ms/step - accuracy: 0.5100 - loss: 0.6931 - val_accuracy: 0.5000 - val_loss: 0.6940
//
// so that SageMaker can scrape metrics from the job's log with
// metric_definitions. [MetricRegex] builds the regex for a metric; each one
// starts with " - " so that loss does not also match val_loss, and accepts
// the exponent form Keras uses for values of 1e-3 and below (1.2000e-05):
//
//	metric_definitions=[
//	    {"Name": "train:loss",          "Regex": " - loss: (-?[0-9.]+e?[+-]?[0-9]*)"},
//	    {"Name": "validation:loss",     "Regex": " - val_loss: (-?[0-9.]+e?[+-]?[0-9]*)"},
//	    {"Name": "validation:accuracy", "Regex": " - val_accuracy: (-?[0-9.]+e?[+-]?[0-9]*)"},
//	    {"Name": "epoch",               "Regex": "Epoch ([0-9]+)/"},
//	]
//
// The shorter regex "loss: ([0-9\.]+)" also finds the training loss (the
// first match on the line), but reads 1.2000e-05 as 1.2.
//
// # Progress bar
//
// [NewProgress] draws a bar (github.com/schollz/progressbar/v3) only when
// told that the writer is a terminal ([IsTerminal]); under SageMaker stdout
// goes to CloudWatch, where a bar would only add noise between the epoch
// lines.
//
// # History
//
// [History] keeps each metric's value per epoch, in the order the metrics
// first appeared. [History.WriteJSON] writes it as Keras users know it from
// json.dump(history.history, f), and [ReadHistoryJSON] reads it back to
// resume training. [WriteLossPlot] draws it.
package report
