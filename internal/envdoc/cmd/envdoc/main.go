// Command envdoc writes docs/configuration.md and .env.example from the
// variables authz, mcp-gateway and devauth declare (package envdoc). It
// builds the binaries (or uses those in $MCPAUTHZ_BIN_DIR) and asks each for
// its declarations with -list-env=json.
//
//	go run ./internal/envdoc/cmd/envdoc [-root DIR]
//
// `make docs` runs it from the repository root.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mcpauthz/mcpauthz/internal/envdoc"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

func main() {
	root := flag.String("root", ".", "the repository's root `directory`")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "envdoc:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	bins := map[string]string{}
	for _, name := range envdoc.Binaries {
		p, err := testenv.BuildBinary(name)
		if err != nil {
			return err
		}
		bins[name] = p
	}
	services, err := envdoc.Read(bins)
	if err != nil {
		return err
	}
	files, err := envdoc.Generate(services)
	if err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
