package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/bench/internal/hist"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
)

// elements parses doc as XML (failing the test if it is not well-formed) and
// counts elements by local name.
func elements(t *testing.T, doc []byte) map[string]int {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	counts := map[string]int{}
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, doc)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if depth == 0 && (e.Name.Local != "svg" || e.Name.Space != "http://www.w3.org/2000/svg") {
				t.Fatalf("root element %v, want svg in the SVG namespace", e.Name)
			}
			depth++
			counts[e.Name.Local]++
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Fatalf("unbalanced elements, depth %d at EOF", depth)
	}
	return counts
}

func TestWriteSVGWellFormed(t *testing.T) {
	t.Parallel()
	var pts []Point
	for c := 1; c <= 128; c *= 2 {
		pts = append(pts, Point{Clients: c, RPS: float64(c) * 321.5, P99MS: 0.2 * float64(c)})
	}
	tests := []struct {
		name      string
		series    []Series
		polylines int
	}{
		{"four series", []Series{
			{Name: KindGateway, Points: pts},
			{Name: KindMCPFloor, Points: pts, Dashed: true},
			{Name: KindAuthz, Points: pts},
			{Name: `a <name> & "quotes"`, Points: pts[:3], Dashed: true},
		}, 8},
		{"single point", []Series{{Name: "one", Points: []Point{{Clients: 4, RPS: 100, P99MS: 1}}}}, 2},
		{"no data", nil, 0},
		{"zeros", []Series{{Name: "z", Points: []Point{{Clients: 1}, {Clients: 2}}}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			chart := Chart{Title: "Throughput & p99 <vs> clients", Subtitle: "subtitle", Rows: []Row{{Title: "row <1>", Series: tt.series}}}
			if err := WriteSVG(&b, chart); err != nil {
				t.Fatal(err)
			}
			counts := elements(t, b.Bytes())
			if got := counts["polyline"]; got != tt.polylines {
				t.Errorf("%d polylines, want %d (one per series per panel)", got, tt.polylines)
			}
			if got := counts["g"]; got != 2 {
				t.Errorf("%d panels, want 2", got)
			}
			if strings.Contains(b.String(), "NaN") || strings.Contains(b.String(), "Inf") {
				t.Errorf("SVG contains NaN or Inf coordinates:\n%s", b.String())
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	t.Parallel()
	tests := []struct {
		span float64
		want float64
	}{
		{10000, 2000}, {12345, 5000}, {7, 2}, {1, 0.2}, {0, 1},
	}
	for _, tt := range tests {
		if got := niceStep(tt.span, 5); got != tt.want {
			t.Errorf("niceStep(%v, 5) = %v, want %v", tt.span, got, tt.want)
		}
	}
}

func sampleReport() *Report {
	h := hist.New()
	for i := range 1000 {
		h.Record(time.Duration(i+1) * time.Microsecond)
	}
	intro, fetch := int64(3), int64(1)
	gw := FromResult(KindGateway, load.Result{
		Concurrency: 32, Requests: 1000, Outcomes: map[string]uint64{load.OK: 990, "http 503": 10},
		Latency: h, Elapsed: 500 * time.Millisecond,
	})
	calls := 1.0
	gw.Introspections, gw.UserFetches, gw.AuthzCallsPerReq = &intro, &fetch, &calls
	fl := FromResult(KindMCPFloor, load.Result{
		Concurrency: 32, Requests: 1000, Outcomes: map[string]uint64{load.OK: 1000}, Latency: h, Elapsed: 400 * time.Millisecond,
	})
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Machine: Machine{CPUs: 2, GOMAXPROCS: 2, GoVersion: "go1.26", Notes: []string{"Floors' GOGC: 400."}},
		Scenarios: []*Scenario{{
			Name: "warm", Description: "tokens seen before", Stack: "1 authz", ASLatencyMS: 30,
			Runs: []Run{gw, fl},
			Checks: []Check{
				{Name: "throughput vs floor at 32", Value: 0.8, Unit: "x", Target: ">= 0.8x", Met: true},
				{Name: "p99 delta", Value: -0.25, Unit: " ms", Target: "<= +1 ms", Met: true},
				{Name: "p50 delta", Value: 0.5, Unit: " ms", Target: "<= +0.3 ms", Met: false},
			},
			Notes: []string{"a note"},
		}},
	}
}

func TestFromResultAndPer1k(t *testing.T) {
	t.Parallel()
	r := sampleReport().Scenarios[0].Runs[0]
	if r.RPS != 2000 || r.Errors != 10 || r.Clients != 32 {
		t.Errorf("RPS %v Errors %d Clients %d, want 2000 10 32", r.RPS, r.Errors, r.Clients)
	}
	if got := r.P50MS; got < 0.49 || got > 0.51 {
		t.Errorf("P50MS = %v, want ~0.5", got)
	}
	if got := r.Per1k(r.Introspections); got != 3 {
		t.Errorf("introspections per 1k = %v, want 3", got)
	}
	if got := r.Per1k(nil); got != -1 {
		t.Errorf("Per1k(nil) = %v, want -1", got)
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"### warm (authorization server +30 ms)",
		"| gateway who_am_i | 32 | 2000 | 0.501 |",
		"| 10 http 503 | 3.00 | 1.00 | 1.00 |",
		"| " + KindMCPFloor + " | 32 | 2500 |",
		"| 0 | – | – | – |",
		"- throughput vs floor at 32: 0.80x (target >= 0.8x): met",
		"- p99 delta: -0.25 ms (target <= +1 ms): met",
		"- p50 delta: +0.50 ms (target <= +0.3 ms): **missed**",
		"- a note",
		"\nFloors' GOGC: 400.\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, &back); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
}

func TestTrend(t *testing.T) {
	t.Parallel()
	mkN := func(n, every int, f func(i int) int64) []Sample {
		var out []Sample
		for i := range n {
			out = append(out, Sample{Seconds: float64(i * every), RSSBytes: map[string]int64{"p": f(i)}})
		}
		return out
	}
	mk := func(f func(i int) int64) []Sample { return mkN(20, 30, f) }
	tests := []struct {
		name      string
		samples   []Sample
		from      float64 // seconds
		wantSlope float64 // bytes per minute
		tolerance float64 // bytes per minute
		wantMean  float64
		wantOK    bool
	}{
		// 1 MiB per sample (30 s): 2 MiB per minute.
		{"growing", mk(func(i int) int64 { return int64(100+i) << 20 }), 0, 2 << 20, 1, float64(int64(100+9)<<20) + 1<<19, true},
		{"flat after warm-up", mk(func(i int) int64 { return int64(min(100+i*5, 120)) << 20 }), 120, 0, 1, 120 << 20, true},
		{"warm-up counted", mk(func(i int) int64 { return int64(min(100+i*5, 120)) << 20 }), 0, 1 << 20, 1 << 20, 0, true},
		// A collector's sawtooth, ±8 MiB around 100 MiB sampled every 2 s for
		// 10 minutes as the soak does, does not read as growth.
		{"sawtooth", mkN(300, 2, func(i int) int64 { return int64(100+8*(1-2*(i%2))) << 20 }), 60, 0, 0.05 * (1 << 20), 100 << 20, true},
		{"too few", mk(func(i int) int64 { return 1 }), 500, 0, 1, 0, false},
	}
	for _, tt := range tests {
		slope, mean, ok := Trend(tt.samples, "p", tt.from)
		if ok != tt.wantOK {
			t.Errorf("%s: ok %v, want %v", tt.name, ok, tt.wantOK)
		}
		if diff := slope - tt.wantSlope; diff > tt.tolerance || diff < -tt.tolerance {
			t.Errorf("%s: slope %v, want %v ± %v", tt.name, slope, tt.wantSlope, tt.tolerance)
		}
		if diff := mean - tt.wantMean; tt.wantMean != 0 && (diff > 1 || diff < -1) {
			t.Errorf("%s: mean %v, want %v", tt.name, mean, tt.wantMean)
		}
	}
	if s, m, ok := Trend(nil, "p", 0); s != 0 || m != 0 || ok {
		t.Errorf("Trend(nil) = %v, %v, want zeros", s, m)
	}
}
