package report

import (
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteLossPlot(t *testing.T) {
	tests := []struct {
		name       string
		epochs     [][]Metric
		wantHeight int
		wantErr    string
	}{
		{
			name:       "losses and accuracy: two panels",
			epochs:     kerasEpochs(12),
			wantHeight: 2 * PanelHeight,
		},
		{
			name:       "loss only",
			epochs:     [][]Metric{{{"loss", 0.9}}, {{"loss", 0.5}}, {{"loss", 0.4}}},
			wantHeight: PanelHeight,
		},
		{
			name:       "accuracy only",
			epochs:     [][]Metric{{{"accuracy", 0.5}}, {{"accuracy", 0.6}}},
			wantHeight: PanelHeight,
		},
		{
			name:       "one epoch",
			epochs:     [][]Metric{{{"loss", 0.9}, {"val_loss", 1.0}}},
			wantHeight: PanelHeight,
		},
		{
			name:       "diverged",
			epochs:     [][]Metric{{{"loss", 0.9}}, {{"loss", math.NaN()}}, {{"loss", math.Inf(1)}}, {{"loss", 0.3}}},
			wantHeight: PanelHeight,
		},
		{
			name:       "validation every other epoch",
			epochs:     [][]Metric{{{"loss", 0.9}}, {{"loss", 0.8}, {"val_loss", 0.85}}, {{"loss", 0.7}}},
			wantHeight: PanelHeight,
		},
		{
			// gonum widens a one-value range by ±1, lost beyond 2^53: it
			// panicked ("illegal range") and failed a job that had trained.
			name:       "one huge loss",
			epochs:     [][]Metric{{{"loss", 2.5e16}, {"accuracy", 0.5}}},
			wantHeight: 2 * PanelHeight,
		},
		{
			name:       "flat huge loss",
			epochs:     [][]Metric{{{"loss", -3e18}}, {{"loss", -3e18}}},
			wantHeight: PanelHeight,
		},
		{
			name:    "empty",
			wantErr: "plot history: the history has no metrics",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h History
			for _, logs := range tt.epochs {
				h.Append(logs)
			}
			path := filepath.Join(t.TempDir(), "loss.png")
			err := WriteLossPlot(&h, path)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatalf("the plot is not a PNG: %v", err)
			}
			if got := img.Bounds().Size(); got != (image.Point{X: PlotWidth, Y: tt.wantHeight}) {
				t.Errorf("size = %v, want %dx%d", got, PlotWidth, tt.wantHeight)
			}
			if colored := coloredPixels(img); colored < 100 {
				t.Errorf("only %d colored pixels: no curves drawn", colored)
			}
		})
	}
}

// kerasEpochs is a made-up fit of n epochs with Keras 3's metric names.
func kerasEpochs(n int) [][]Metric {
	var epochs [][]Metric
	for i := range n {
		x := float64(i)
		epochs = append(epochs, []Metric{
			{"accuracy", 1 - 0.5*math.Exp(-x/3)},
			{"loss", 0.7 * math.Exp(-x/4)},
			{"val_accuracy", 0.95 - 0.5*math.Exp(-x/3)},
			{"val_loss", 0.75*math.Exp(-x/4) + 0.05},
		})
	}
	return epochs
}

// coloredPixels counts pixels that are neither gray nor white: curve pixels.
func coloredPixels(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r != g || g != bl {
				n++
			}
		}
	}
	return n
}
