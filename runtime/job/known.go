package job

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// known is every hyperparameter sagefit reads.
var known = []string{
	HPEpochs, HPBatchSize, HPShuffle, HPSeed, HPLearningRate,
	HPStepsPerEpoch, HPValSteps, HPValFreq, HPInitialEpoch, HPValSplit, HPClassWeight, HPStepsPerExec,
	HPModelPath, HPModelChannel, HPTrainChannel, HPValChannel, HPTensorFiles, HPModelVersion,
	HPIntraOpThreads, HPInterOpThreads, HPExecutor, HPGPUMemGrowth, HPSoftPlacement, HPLogPlacement, HPPrefetch,
	HPPeerTimeout, HPConnectTimeout, HPAllReduceChunk, HPCompressFP16, HPRingTransport,
	HPPipeTensors, HPPipeTimeout, HPCheckpoint, HPCheckpointSteps, HPCheckpointKeep,
	HPProcessesPerHost,
}

// sageMakerOwn are hyperparameters SageMaker's own tooling adds to jobs it
// launches, accepted without a word: the TensorFlow estimator's model_dir,
// and the objective metric of an automatic model tuning job. (Keys starting
// "sagemaker_" are framework settings and never reach the hyperparameters.)
var sageMakerOwn = []string{"model_dir", "_tuning_objective_metric"}

// CheckKnown refuses every hyperparameter that is neither sagefit's nor
// SageMaker's own, in one sentence that names each with the closest known
// name where one is close.
func CheckKnown(env *sagemaker.Env) error {
	if name := jitCompileLike(env); name != "" {
		return fmt.Errorf("hyperparameter %q: jit_compile cannot change a model already exported: XLA is chosen where Keras chooses it, at compile; compile the model with jit_compile=True and export it again (it then trains XLA-compiled), and remove the hyperparameter", name)
	}
	var unknown []string
	for name := range env.Hyperparameters {
		if !slices.Contains(known, name) && !slices.Contains(sageMakerOwn, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	parts := make([]string, len(unknown))
	for i, name := range unknown {
		parts[i] = fmt.Sprintf("%q", name)
		if near := closest(name); near != "" {
			parts[i] += fmt.Sprintf(" (did you mean %q?)", near)
		}
	}
	what := "hyperparameter " + parts[0] + " is not one sagefit reads"
	if len(parts) > 1 {
		what = "hyperparameters " + strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1] + " are not ones sagefit reads"
	}
	it := "it"
	if len(parts) > 1 {
		it = "them"
	}
	return fmt.Errorf("%s, so the job would silently train without %s; remove or rename %s (the README's hyperparameter table lists every one)", what, it, it)
}

// jitCompileLike is a hyperparameter given that means jit_compile (that
// name, in any case, or a typo of it), which an exported model cannot
// take; "" when none is.
func jitCompileLike(env *sagemaker.Env) string {
	for name := range env.Hyperparameters {
		if editDistance(strings.ToLower(name), "jit_compile") <= 2 && !slices.Contains(known, name) {
			return name
		}
	}
	return ""
}

// closest is the known name nearest to name by edit distance, when it is
// near enough to be a typo (at most a third of the name's length, and at
// least 2 edits allowed); "" otherwise.
func closest(name string) string {
	best, bestD := "", max(2, len(name)/3)+1
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
