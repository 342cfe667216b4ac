package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colP50  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colP99  = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colRPS  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colLost = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// writeChart draws one panel per scenario: p50 and p99 latency per
// implementation for read, write, new and shared-counter, requests per
// second for throughput, and lost updates for shared-counter.
func writeChart(path string, cfg config, results []*result) error {
	var panels []*plot.Plot
	for _, sc := range cfg.scenarios {
		rows := rowsOf(results, sc)
		if len(rows) == 0 {
			continue
		}
		var p *plot.Plot
		var err error
		if sc == "throughput" {
			p, err = rpsPanel(fmt.Sprintf("throughput: requests/s, %d clients, %.0f%% writes (higher is better)", cfg.throughputN, cfg.writeShare*100), rows)
		} else {
			n := cfg.concurrency
			if sc == "shared-counter" {
				n = cfg.sharedN
			}
			p, err = latencyPanel(fmt.Sprintf("%s: latency, %d clients (lower is better)", sc, n), rows)
		}
		if err != nil {
			return err
		}
		panels = append(panels, p)
		if sc == "shared-counter" {
			if p, err = lostPanel(rows); err != nil {
				return err
			}
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		return fmt.Errorf("chart: no results")
	}
	const cols = 2
	nrows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, nrows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	w, h := 14*vg.Inch, vg.Length(nrows)*4.2*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	t := draw.Tiles{
		Rows: nrows, Cols: cols,
		PadX: 0.4 * vg.Inch, PadY: 0.3 * vg.Inch,
		PadTop: 0.2 * vg.Inch, PadBottom: 0.2 * vg.Inch, PadLeft: 0.2 * vg.Inch, PadRight: 0.3 * vg.Inch,
	}
	canvases := plot.Align(grid, t, dc)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func rowsOf(results []*result, sc string) []*result {
	var rows []*result
	for _, r := range results {
		if r.Scenario == sc {
			rows = append(rows, r)
		}
	}
	return rows
}

func newPanel(title, ylabel string, rows []*result) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Impl
	}
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 8
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YTop
	p.X.Tick.Label.Font.Size = vg.Points(11)
	p.Y.Tick.Marker = niceTicks{}
	g := plotter.NewGrid()
	g.Vertical.Color = nil // no lines through the bars
	p.Add(g)
	return p
}

// niceTicks puts about five major ticks at round values (1, 2 or 5 times a
// power of ten) with integer labels.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if hi <= lo {
		return []plot.Tick{{Value: lo, Label: fmt.Sprintf("%.0f", lo)}}
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f", v)})
		for k := 1; k < 5; k++ {
			if m := v + float64(k)*step/5; m <= hi {
				ticks = append(ticks, plot.Tick{Value: m})
			}
		}
	}
	return ticks
}

func bars(vals plotter.Values, c color.Color, w vg.Length, off vg.Length) (*plotter.BarChart, error) {
	b, err := plotter.NewBarChart(vals, w)
	if err != nil {
		return nil, err
	}
	b.Color = c
	b.LineStyle.Width = 0
	b.Offset = off
	return b, nil
}

// valueLabels writes each value above its bar.
func valueLabels(vals plotter.Values, xoff float64, format string, size vg.Length) (*plotter.Labels, error) {
	xy := make(plotter.XYs, len(vals))
	txt := make([]string, len(vals))
	for i, v := range vals {
		xy[i] = plotter.XY{X: float64(i) + xoff, Y: v}
		txt[i] = fmt.Sprintf(format, v)
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xy, Labels: txt})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].Font.Size = size
	}
	l.Offset = vg.Point{Y: vg.Points(3)}
	return l, nil
}

func latencyPanel(title string, rows []*result) (*plot.Plot, error) {
	p := newPanel(title, "µs", rows)
	p50 := make(plotter.Values, len(rows))
	p99 := make(plotter.Values, len(rows))
	for i, r := range rows {
		p50[i], p99[i] = r.P50us, r.P99us
	}
	// Two bars per implementation, narrower when there are many.
	w := vg.Points(min(22, 170/float64(len(rows))))
	b50, err := bars(p50, colP50, w, -w/2)
	if err != nil {
		return nil, err
	}
	b99, err := bars(p99, colP99, w, w/2)
	if err != nil {
		return nil, err
	}
	l50, err := valueLabels(p50, -0.17, "%.0f", vg.Points(9))
	if err != nil {
		return nil, err
	}
	p.Add(b50, b99, l50)
	p.Legend.Add("p50", b50)
	p.Legend.Add("p99", b99)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Y.Max = maxOf(p99) * 1.3
	return p, nil
}

func rpsPanel(title string, rows []*result) (*plot.Plot, error) {
	p := newPanel(title, "requests/s", rows)
	vals := make(plotter.Values, len(rows))
	for i, r := range rows {
		vals[i] = r.RPS
	}
	b, err := bars(vals, colRPS, vg.Points(36), 0)
	if err != nil {
		return nil, err
	}
	l, err := valueLabels(vals, 0, "%.0f", vg.Points(10))
	if err != nil {
		return nil, err
	}
	p.Add(b, l)
	p.Y.Max = maxOf(vals) * 1.12
	return p, nil
}

func lostPanel(rows []*result) (*plot.Plot, error) {
	p := newPanel("shared-counter: lost updates (acknowledged - final; 0 is correct)", "increments lost", rows)
	vals := make(plotter.Values, len(rows))
	for i, r := range rows {
		vals[i] = float64(max(r.LostUpdates, 0))
	}
	b, err := bars(vals, colLost, vg.Points(36), 0)
	if err != nil {
		return nil, err
	}
	l, err := valueLabels(vals, 0, "%.0f", vg.Points(10))
	if err != nil {
		return nil, err
	}
	p.Add(b, l)
	p.Y.Max = max(maxOf(vals)*1.12, 1)
	return p, nil
}

func maxOf(vs plotter.Values) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}
