package charttest

import (
	"sync"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/envdoc"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

var (
	declaredOnce sync.Once
	declared     map[string][]envconf.Var
	declaredErr  error
)

// declaredVars is what each binary declares, as the built binary prints it
// with -list-env=json: the names it reads, not what a document says.
func declaredVars(t *testing.T) map[string][]envconf.Var {
	t.Helper()
	declaredOnce.Do(func() {
		bins := map[string]string{}
		for _, name := range envdoc.Binaries {
			p, err := testenv.BuildBinary(name)
			if err != nil {
				declaredErr = err
				return
			}
			bins[name] = p
		}
		services, err := envdoc.Read(bins)
		if err != nil {
			declaredErr = err
			return
		}
		declared = map[string][]envconf.Var{}
		for _, s := range services {
			declared[s.Name] = s.Vars
		}
	})
	if declaredErr != nil {
		t.Fatal(declaredErr)
	}
	return declared
}

// declaredEnv is declaredVars as sets of names, by binary.
func declaredEnv(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for bin, vars := range declaredVars(t) {
		out[bin] = map[string]bool{}
		for _, v := range vars {
			out[bin][v.Name] = true
		}
	}
	return out
}
