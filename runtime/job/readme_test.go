package job

import (
	"os"
	"strings"
	"testing"
)

// Every hyperparameter sagefit reads is in the README's table, where the
// refusal of unknown ones sends the user.
func TestREADMEListsEveryHyperparameter(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range known {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README.md does not list hyperparameter %q", name)
		}
	}
}
