package e2e

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// TestDocLinks: every relative link in README.md, docs/*.md and the notes under
// bench/results/ names a file or directory of the repository and, when it points
// into a Markdown file with #anchor, a heading of that file, so moving or
// renaming a document or a heading cannot leave readers at a dead link.
func TestDocLinks(t *testing.T) {
	t.Parallel()
	files := []string{"README.md"}
	for _, pattern := range []string{"docs/*.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot, p)
			files = append(files, rel)
		}
	}
	err := filepath.WalkDir(filepath.Join(repoRoot, "bench", "results"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "README.md" {
			rel, _ := filepath.Rel(repoRoot, p)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %v: the test is not looking where the docs are", files)
	}
	links := 0
	for _, f := range files {
		problems, n := checkDocLinks(repoRoot, f)
		links += n
		for _, p := range problems {
			t.Error(p)
		}
	}
	t.Logf("%d relative links in %d files", links, len(files))
}

// TestCheckDocLinks: the checker finds a missing file, a missing heading in
// this or another file, and a link out of the repository; it ignores links in
// code, external links and anchors into non-Markdown files, and knows GitHub's
// heading anchors (punctuation dropped, duplicates numbered).
func TestCheckDocLinks(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/other.md", "# Other\n\n## Mutual TLS: the `AUTHZ_TLS_*` variables\n\n## Notes\n\n## Notes\n\n### authz's Go benchmarks (/dev/*)\n")
	write("main.go", "package main\n")
	write("docs/page.md", strings.Join([]string{
		"# Page",
		"[ok](other.md) [ok](other.md#mutual-tls-the-authz_tls_-variables) [ok](other.md#notes-1)",
		"[ok](other.md#authzs-go-benchmarks-dev) [ok](#page) [ok](../main.go#L1) [ok](../docs/) ![ok](other.md)",
		"[ok](https://example.com/x.md#nope) [ok](mailto:a@example.com) `[code](missing.md)`",
		"```",
		"[fenced](missing.md)",
		"```",
		"[missing file](missing.md)",
		"[missing heading](other.md#nope) [missing here](#nope) [third notes](other.md#notes-2)",
		"[outside](../../etc/passwd)",
		"[ref]: missing-ref.md",
	}, "\n"))
	problems, n := checkDocLinks(root, "docs/page.md")
	want := []string{
		`docs/page.md:8: link "missing.md": docs/missing.md does not exist`,
		`docs/page.md:9: link "other.md#nope": docs/other.md has no heading with anchor #nope`,
		`docs/page.md:9: link "#nope": docs/page.md has no heading with anchor #nope`,
		`docs/page.md:9: link "other.md#notes-2": docs/other.md has no heading with anchor #notes-2`,
		`docs/page.md:10: link "../../etc/passwd": leaves the repository`,
		`docs/page.md:11: link "missing-ref.md": docs/missing-ref.md does not exist`,
	}
	if diff := cmp.Diff(want, problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if n != 14 {
		t.Errorf("counted %d relative links, want 14", n)
	}
}

var (
	// inlineLink matches [text](target) and ![alt](target), with an optional title.
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refLink matches a reference definition: [label]: target.
	refLink   = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	codeSpan  = regexp.MustCompile("`+[^`]*`+")
	heading   = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	hasScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	// linkText matches a link or image in a heading, which contributes its text.
	linkText = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// checkDocLinks checks every relative link of the Markdown file rel (relative
// to root) and returns one line per broken link, and how many relative links
// it checked.
func checkDocLinks(root, rel string) (problems []string, checked int) {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return []string{err.Error()}, 0
	}
	anchors := map[string]map[string]bool{}
	for i, line := range markdownLines(string(b)) {
		if line == "" {
			continue
		}
		var targets []string
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets = append(targets, m[1])
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			if hasScheme.MatchString(target) || strings.HasPrefix(target, "//") {
				continue
			}
			checked++
			if p := checkDocLink(root, rel, target, anchors); p != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: link %q: %s", rel, i+1, target, p))
			}
		}
	}
	return problems, checked
}

// checkDocLink checks one relative link target of the file rel, and returns
// what is wrong with it, or "".
func checkDocLink(root, rel, target string, anchors map[string]map[string]bool) string {
	path, fragment, _ := strings.Cut(target, "#")
	path, err := url.PathUnescape(path)
	if err != nil {
		return err.Error()
	}
	dest := rel
	switch {
	case path == "":
	case strings.HasPrefix(path, "/"):
		dest = filepath.Clean(strings.TrimPrefix(path, "/"))
	default:
		dest = filepath.Join(filepath.Dir(rel), path)
	}
	if dest == ".." || strings.HasPrefix(dest, "../") {
		return "leaves the repository"
	}
	if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
		return dest + " does not exist"
	}
	if fragment == "" || !strings.HasSuffix(dest, ".md") {
		return ""
	}
	if anchors[dest] == nil {
		b, err := os.ReadFile(filepath.Join(root, dest))
		if err != nil {
			return err.Error()
		}
		anchors[dest] = headingAnchors(string(b))
	}
	if !anchors[dest][fragment] {
		return fmt.Sprintf("%s has no heading with anchor #%s", dest, fragment)
	}
	return ""
}

// markdownLines returns the lines of a Markdown text with fenced code blocks
// blanked and inline code spans removed, so that only prose is looked at;
// line numbers are kept.
func markdownLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			lines[i] = ""
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			lines[i] = ""
			continue
		}
		lines[i] = codeSpan.ReplaceAllString(line, "")
	}
	return lines
}

// headingAnchors returns the anchors GitHub gives the headings of a Markdown
// text: the heading's text, lowercased, with everything but letters, digits,
// spaces, hyphens and underscores dropped and spaces turned into hyphens; a
// repeated anchor gets -1, -2, ...
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		title := linkText.ReplaceAllString(m[2], "$1")
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
				b.WriteRune(r)
			}
		}
		slug := b.String()
		if n := seen[slug]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}
