package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// dockerfile is the part of a Dockerfile these tests look at: its build stages and
// their instructions, with line continuations joined and comments dropped. It is
// no general parser: the repository's own Dockerfiles are its only input.
type dockerfile struct {
	// args are the ARG defaults declared before the first FROM.
	args   map[string]string
	stages []stage
}

type stage struct {
	// from is the base image with ${ARG} references expanded.
	from  string
	name  string
	instr []instruction
}

type instruction struct {
	cmd  string // upper case: RUN, COPY, ...
	args string
}

func parseDockerfile(path string) (*dockerfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	df := &dockerfile{args: map[string]string{}}
	var logical strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && logical.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont)
			logical.WriteByte(' ')
			continue
		}
		logical.WriteString(line)
		if err := df.add(logical.String()); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		logical.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if logical.Len() > 0 {
		return nil, fmt.Errorf("%s: ends inside a continued line", path)
	}
	if len(df.stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", path)
	}
	return df, nil
}

func (df *dockerfile) add(line string) error {
	cmd, args, _ := strings.Cut(line, " ")
	cmd = strings.ToUpper(cmd)
	args = strings.TrimSpace(args)
	switch {
	case cmd == "FROM":
		fields := strings.Fields(args)
		st := stage{from: os.Expand(fields[0], func(k string) string { return df.args[k] })}
		if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
			st.name = fields[2]
		}
		df.stages = append(df.stages, st)
	case len(df.stages) == 0 && cmd == "ARG":
		k, v, _ := strings.Cut(args, "=")
		df.args[k] = v
	case len(df.stages) == 0:
		return fmt.Errorf("%s before the first FROM", cmd)
	default:
		last := &df.stages[len(df.stages)-1]
		last.instr = append(last.instr, instruction{cmd: cmd, args: args})
	}
	return nil
}

// final returns the stage that becomes the image.
func (df *dockerfile) final() stage { return df.stages[len(df.stages)-1] }

// all returns the arguments of every cmd instruction of the stage.
func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// exec parses the JSON (exec) form of ENTRYPOINT, CMD or HEALTHCHECK CMD. The
// shell form is an error: the final images have no shell.
func execForm(args string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		return nil, fmt.Errorf("%q is not the exec (JSON array) form: %v", args, err)
	}
	return argv, nil
}
