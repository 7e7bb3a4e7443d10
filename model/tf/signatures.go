package tf

import (
	"fmt"
	"sort"
	"strings"

	corepb "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"

	"github.com/sagefit/sagefit/model"
)

// signature is a SignatureDef with its tensor names, and the dtype and
// shape it gives each of them.
type signature struct {
	inputs  map[string]string
	outputs map[string]string
	info    map[tensorKey]tensorInfo
}

type tensorKey struct {
	input bool
	key   string
}

// tensorInfo is a TensorInfo's dtype and shape; a nil shape is an unknown
// rank, a dimension of -1 an unknown size.
type tensorInfo struct {
	dtype model.DType
	shape []int64
}

func newSignature(sd *corepb.SignatureDef) signature {
	s := signature{inputs: map[string]string{}, outputs: map[string]string{}, info: map[tensorKey]tensorInfo{}}
	for _, side := range []struct {
		input bool
		infos map[string]*corepb.TensorInfo
		names map[string]string
	}{{true, sd.GetInputs(), s.inputs}, {false, sd.GetOutputs(), s.outputs}} {
		for k, ti := range side.infos {
			side.names[k] = ti.GetName()
			info := tensorInfo{dtype: model.DType(ti.GetDtype())}
			if ts := ti.GetTensorShape(); !ts.GetUnknownRank() {
				info.shape = []int64{}
				for _, d := range ts.GetDim() {
					info.shape = append(info.shape, d.GetSize())
				}
			}
			s.info[tensorKey{side.input, k}] = info
		}
	}
	return s
}

// describes says where the graph's tensor differs from what the metadata
// says of it ("" where it does not, or where the graph does not know).
func (i tensorInfo) describes(d model.DescribedTensor) string {
	same := i.dtype == d.DType && (i.shape == nil || len(i.shape) == len(d.Shape))
	for k := range i.shape {
		same = same && (i.shape[k] < 0 || k >= len(d.Shape) || i.shape[k] == d.Shape[k])
	}
	if same {
		return ""
	}
	return fmt.Sprintf("%s is %s %s in the graph, %s %s in %s", d.What, i.dtype, dims(i.shape), d.DType, dims(d.Shape), model.MetadataFile)
}

// dims writes a shape as Python does, "(4, 1)"; "(?)" for an unknown rank.
func dims(shape []int64) string {
	if shape == nil {
		return "(?)"
	}
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
		if d < 0 {
			parts[i] = "None"
		}
	}
	if len(parts) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
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
	if len(problems) == 0 { // the tensors are there: are they what it says?
		for _, d := range m.Described() {
			if name := m.Signatures[d.Role]; name != "" {
				if diff := sigs[name].info[tensorKey{d.Input, d.Key}].describes(d); diff != "" {
					problems = append(problems, diff)
				}
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
