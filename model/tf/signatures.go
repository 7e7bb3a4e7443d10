package tf

import (
	"fmt"
	"sort"
	"strings"

	"github.com/sagefit/sagefit/model"
)

// signature is a SignatureDef with its tensor names.
type signature struct {
	inputs  map[string]string
	outputs map[string]string
}

// checkSignatures verifies that every role's signature exists in the graph's
// MetaGraphDef with the tensors the contract says it has.
func checkSignatures(m *model.Metadata, sigs map[string]signature) error {
	var problems []string
	for _, r := range m.Roles() {
		name := m.Signatures[r.Role]
		if name == "" {
			continue
		}
		sig, ok := sigs[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("signature %s (%s) is missing", name, r.Role))
			continue
		}
		for _, f := range r.Feeds {
			if _, ok := sig.inputs[f.Key]; !ok {
				problems = append(problems, fmt.Sprintf("signature %s has no input %q", name, f.Key))
			}
		}
		for _, k := range r.Fetches {
			if _, ok := sig.outputs[k]; !ok {
				problems = append(problems, fmt.Sprintf("signature %s has no output %q", name, k))
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%w: its %s does not describe its graph (%s); was it copied from another export? export the model again",
			model.ErrNotTrainingModel, model.ExtraDir+"/"+model.MetadataFile, firstOf(problems, 3))
	}
	return nil
}

// firstOf joins the first n problems and counts the rest: a failure
// reason is read in its first thousand characters.
func firstOf(problems []string, n int) string {
	if len(problems) <= n {
		return strings.Join(problems, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(problems[:n], "; "), len(problems)-n)
}
