package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// Point is one measurement of a series in the chart.
type Point struct {
	Clients int
	RPS     float64
	P99MS   float64
}

// Series is one line of the chart (one target).
type Series struct {
	Name   string
	Dashed bool
	Points []Point
}

// palette is colour-blind safe (Okabe–Ito).
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"}

const (
	svgW    = 1000
	panelW  = 400
	panelH  = 240
	marginL = 70
	gap     = 110
)

// Row is one row of the chart: a throughput panel and a p99 panel sharing a
// legend, for series of comparable magnitude (e.g. the MCP targets).
type Row struct {
	Title  string
	Series []Series
}

// Chart is a whole SVG document.
type Chart struct {
	Title, Subtitle string
	Rows            []Row
}

type panel struct {
	x0, y0       float64 // top-left of the plot area
	xmin, xmax   float64 // log2 clients
	ymin, ymax   float64 // value range (log10 when logY)
	logY         bool
	title, yname string
}

func (p panel) px(clients int) float64 {
	x := math.Log2(float64(max(clients, 1)))
	if p.xmax == p.xmin {
		return p.x0 + panelW/2
	}
	return p.x0 + (x-p.xmin)/(p.xmax-p.xmin)*panelW
}

func (p panel) py(v float64) float64 {
	if p.logY {
		v = math.Log10(math.Max(v, 1e-9))
	}
	if p.ymax == p.ymin {
		return p.y0 + panelH/2
	}
	f := (v - p.ymin) / (p.ymax - p.ymin)
	return p.y0 + panelH - f*panelH
}

// niceStep returns a step of 1, 2 or 5 times a power of ten near span/n.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= raw {
			return m * pow
		}
	}
	return 10 * pow
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func fmtTick(v float64) string {
	switch {
	case v >= 1000 && math.Mod(v, 1000) == 0:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 1 || v == 0:
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

// WriteSVG draws, for every row, two panels: throughput (linear) and p99
// latency (log scale) against the number of concurrent clients (log2 scale),
// one line per series, and a legend. The output is a standalone, well-formed
// SVG document.
func WriteSVG(w io.Writer, c Chart) error {
	var body strings.Builder
	y := 40.0
	if c.Subtitle != "" {
		y += 20
	}
	for _, row := range c.Rows {
		y = writeRow(&body, row, y+20)
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="sans-serif" font-size="12">`+"\n", svgW, y+10, svgW, y+10)
	b.WriteString(`<rect width="100%" height="100%" fill="#ffffff"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", marginL-50, esc(c.Title))
	if c.Subtitle != "" {
		fmt.Fprintf(&b, `<text x="%d" y="44" fill="#555555">%s</text>`+"\n", marginL-50, esc(c.Subtitle))
	}
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRow draws one row starting at top and returns where the next may start.
func writeRow(b *strings.Builder, row Row, top float64) float64 {
	series := row.Series
	minC, maxC := math.MaxInt, 1
	maxRPS, minP99, maxP99 := 0.0, math.MaxFloat64, 0.0
	for _, s := range series {
		for _, pt := range s.Points {
			minC, maxC = min(minC, pt.Clients), max(maxC, pt.Clients)
			maxRPS = max(maxRPS, pt.RPS)
			if pt.P99MS > 0 {
				minP99, maxP99 = min(minP99, pt.P99MS), max(maxP99, pt.P99MS)
			}
		}
	}
	if minC == math.MaxInt {
		minC = 1
	}
	if maxP99 == 0 {
		minP99, maxP99 = 0.1, 1
	}
	xmin, xmax := math.Log2(float64(max(minC, 1))), math.Log2(float64(maxC))
	rpsStep := niceStep(maxRPS, 5)
	rpsTop := math.Ceil(maxRPS/rpsStep) * rpsStep
	if rpsTop == 0 {
		rpsTop = 1
	}
	ylo, yhi := math.Floor(math.Log10(minP99)), math.Ceil(math.Log10(maxP99))
	if yhi == ylo {
		yhi++
	}

	fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="14" font-weight="bold">%s</text>`+"\n", marginL-50, top, esc(row.Title))
	y0 := top + 30
	left := panel{x0: marginL, y0: y0, xmin: xmin, xmax: xmax, ymin: 0, ymax: rpsTop,
		title: "Throughput (requests/s, higher is better)", yname: "req/s"}
	right := panel{x0: marginL + panelW + gap, y0: y0, xmin: xmin, xmax: xmax, ymin: ylo, ymax: yhi, logY: true,
		title: "p99 latency (ms, log scale, lower is better)", yname: "ms"}

	for _, p := range []panel{left, right} {
		b.WriteString(`<g class="panel">` + "\n")
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-weight="bold">%s</text>`+"\n", p.x0, p.y0-8, esc(p.title))
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%d" height="%d" fill="none" stroke="#999999"/>`+"\n", p.x0, p.y0, panelW, panelH)
		for c := 1; c <= maxC; c *= 2 {
			if c < minC {
				continue
			}
			x := p.px(c)
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eeeeee"/>`+"\n", x, p.y0, x, p.y0+panelH)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, p.y0+panelH+16, c)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">concurrent clients</text>`+"\n", p.x0+panelW/2, p.y0+panelH+34)
		if p.logY {
			for e := p.ymin; e <= p.ymax; e++ {
				for _, m := range []float64{1, 2, 5} {
					v := m * math.Pow(10, e)
					if math.Log10(v) > p.ymax+1e-9 {
						continue
					}
					y := p.py(v)
					fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eeeeee"/>`+"\n", p.x0, y, p.x0+panelW, y)
					fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", p.x0-6, y+4, fmtTick(v))
				}
			}
		} else {
			for v := 0.0; v <= p.ymax+1e-9; v += rpsStep {
				y := p.py(v)
				fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eeeeee"/>`+"\n", p.x0, y, p.x0+panelW, y)
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", p.x0-6, y+4, fmtTick(v))
			}
		}
		fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", p.x0-52, p.y0+panelH/2, esc(p.yname))
		for i, s := range series {
			color := palette[i%len(palette)]
			var pts []string
			for _, pt := range s.Points {
				v := pt.RPS
				if p.logY {
					v = pt.P99MS
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", p.px(pt.Clients), p.py(v)))
			}
			if len(pts) == 0 {
				continue
			}
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s</title></polyline>`+"\n", color, dashAttr(s.Dashed), strings.Join(pts, " "), esc(s.Name))
			for _, xy := range pts {
				x, y, _ := strings.Cut(xy, ",")
				fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, color)
			}
		}
		b.WriteString("</g>\n")
	}

	ly := y0 + panelH + 60
	for i, s := range series {
		color := palette[i%len(palette)]
		x := float64(marginL) + float64(i%2)*(panelW+gap)
		y := ly + float64(i/2)*18
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x, y-4, x+24, y-4, color, dashAttr(s.Dashed))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x+30, y, esc(s.Name))
	}
	return ly + float64((len(series)+1)/2)*18
}

func dashAttr(dashed bool) string {
	if dashed {
		return ` stroke-dasharray="6 4"`
	}
	return ""
}
