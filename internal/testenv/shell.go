package testenv

import "strings"

// ShellQuote quotes s as one word for sh: in single quotes, with each
// single quote in s closed, escaped and reopened.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellJoin quotes every word of argv with ShellQuote and joins them with
// spaces, for sh -c.
func ShellJoin(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = ShellQuote(a)
	}
	return strings.Join(q, " ")
}
