// Command allreduceplot draws the results of `make bench-allreduce`
// (python/sagefit/bench_allreduce.py) as a PNG: bus bandwidth against
// buffer size, one panel per ring size on loopback with the raw TCP bound
// and TensorFlow beside sagefit, and one panel for the bandwidth-limited
// run against its link rate.
//
//	allreduceplot -in .bench/allreduce/results.json -out docs/allreduce.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

type result struct {
	Setting string  `json:"setting"` // "loopback" or "netns"
	Impl    string  `json:"impl"`    // "sagefit", "sagefit-grpc", "bare-ring", "tensorflow", "tcp" (bytes 0: 1 MiB buffer) or "tcp-sized" (buffers of bytes)
	N       int     `json:"n"`
	Bytes   int     `json:"bytes"`
	BusBW   float64 `json:"busbw_MBps"`
}

type results struct {
	Meta struct {
		Rate    string  `json:"rate"`
		RateBps float64 `json:"rate_Bps"`
	} `json:"meta"`
	Results []result `json:"results"`
}

var (
	colSagefit = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colTF      = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colGRPC    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colBound   = color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}
	colBare    = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	colN       = []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	}
)

func main() {
	in := flag.String("in", ".bench/allreduce/results.json", "results written by sagefit.bench_allreduce")
	out := flag.String("out", "docs/allreduce.png", "PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "allreduceplot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	var ranks, nsRanks []int
	for _, r := range res.Results {
		switch {
		case r.Setting == "loopback" && !slices.Contains(ranks, r.N):
			ranks = append(ranks, r.N)
		case r.Setting == "netns" && !slices.Contains(nsRanks, r.N):
			nsRanks = append(nsRanks, r.N)
		}
	}
	slices.Sort(ranks)
	slices.Sort(nsRanks)

	var panels []*plot.Plot
	for _, n := range ranks {
		p, err := loopbackPanel(res.Results, n)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(nsRanks) > 0 {
		p, err := netnsPanel(res, nsRanks)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return fmt.Errorf("%s holds no results", in)
	}

	const cols, w, h, dpi = 2, 560, 420, 96
	rows := (len(panels) + cols - 1) / cols
	img := image.NewRGBA(image.Rect(0, 0, cols*w, rows*h))
	c := vgimg.NewWith(vgimg.UseImage(img), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadTop: 6, PadBottom: 6, PadLeft: 6, PadRight: 12, PadX: 16, PadY: 16}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[i/cols][i%cols])
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPanel(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "buffer size"
	p.Y.Label.Text = "busbw (MB/s)"
	p.X.Scale = plot.LogScale{}
	p.Y.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	return p
}

// curve adds busbw against size for the matching results.
func curve(p *plot.Plot, rs []result, setting, impl string, n int, name string, col color.Color, dashed bool) error {
	var pts plotter.XYs
	for _, r := range rs {
		if r.Setting == setting && r.Impl == impl && r.N == n && r.Bytes > 0 && r.BusBW > 0 {
			pts = append(pts, plotter.XY{X: float64(r.Bytes), Y: r.BusBW})
		}
	}
	if len(pts) == 0 {
		return nil
	}
	slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
	line, points, err := plotter.NewLinePoints(pts)
	if err != nil {
		return fmt.Errorf("%s n=%d: %w", name, n, err)
	}
	line.Color, points.Color = col, col
	line.Width = vg.Points(1.5)
	points.Radius = vg.Points(2)
	if dashed {
		line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	}
	p.Add(line, points)
	p.Legend.Add(name, line, points)
	return nil
}

// level adds a horizontal line across the panel's sizes.
func level(p *plot.Plot, y, lo, hi float64, name string, dashes []vg.Length) error {
	if y <= 0 {
		return nil
	}
	l, err := plotter.NewLine(plotter.XYs{{X: lo, Y: y}, {X: hi, Y: y}})
	if err != nil {
		return err
	}
	l.Color = colBound
	l.Width = vg.Points(1)
	l.Dashes = dashes
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

func sizeRange(rs []result, setting string) (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	for _, r := range rs {
		if r.Setting == setting && r.Bytes > 0 {
			lo, hi = math.Min(lo, float64(r.Bytes)), math.Max(hi, float64(r.Bytes))
		}
	}
	return lo, hi
}

func loopbackPanel(rs []result, n int) (*plot.Plot, error) {
	p := newPanel(fmt.Sprintf("loopback, n=%d ranks (one process each)", n))
	lo, hi := sizeRange(rs, "loopback")
	var tcp float64
	for _, r := range rs {
		if r.Setting == "loopback" && r.Impl == "tcp" && r.N == n {
			tcp = r.BusBW
		}
	}
	if err := level(p, tcp, lo, hi, "raw TCP per link", nil); err != nil {
		return nil, err
	}
	if err := level(p, 0.7*tcp, lo, hi, "70% of raw TCP", []vg.Length{vg.Points(2), vg.Points(3)}); err != nil {
		return nil, err
	}
	if err := curve(p, rs, "loopback", "tcp-sized", n, "raw TCP moving buffers of the size", colBound, true); err != nil {
		return nil, err
	}
	if err := curve(p, rs, "loopback", "bare-ring", n, "bare ring (reads, sums, writes only)", colBare, true); err != nil {
		return nil, err
	}
	if err := curve(p, rs, "loopback", "sagefit", n, "sagefit ring (data lane)", colSagefit, false); err != nil {
		return nil, err
	}
	if err := curve(p, rs, "loopback", "sagefit-grpc", n, "sagefit ring (gRPC streams)", colGRPC, true); err != nil {
		return nil, err
	}
	if err := curve(p, rs, "loopback", "tensorflow", n, "TensorFlow MWMS RING", colTF, true); err != nil {
		return nil, err
	}
	p.Legend.Top, p.Legend.Left = false, false // below the curves' plateau, right of TensorFlow's rise
	p.Y.Max = math.Max(p.Y.Max, tcp*1.5)
	return p, nil
}

func netnsPanel(res results, ranks []int) (*plot.Plot, error) {
	bound := res.Meta.RateBps / 1e6
	p := newPanel(fmt.Sprintf("netns hosts, %s links (tc tbf)", res.Meta.Rate))
	p.Legend.Left = false
	p.Legend.Top = false
	lo, hi := sizeRange(res.Results, "netns")
	if err := level(p, bound, lo, hi, "link rate (busbw bound)", nil); err != nil {
		return nil, err
	}
	if err := level(p, 0.9*bound, lo, hi, "90% of link rate", []vg.Length{vg.Points(2), vg.Points(3)}); err != nil {
		return nil, err
	}
	var tcp float64 // mean over ranks of raw TCP over the shaped link
	for _, r := range res.Results {
		if r.Setting == "netns" && r.Impl == "tcp" {
			tcp += r.BusBW / float64(len(ranks))
		}
	}
	if err := level(p, tcp, lo, hi, "raw TCP over the link", []vg.Length{vg.Points(8), vg.Points(2), vg.Points(2), vg.Points(2)}); err != nil {
		return nil, err
	}
	for i, n := range ranks {
		if err := curve(p, res.Results, "netns", "sagefit", n, fmt.Sprintf("sagefit n=%d", n), colN[i%len(colN)], false); err != nil {
			return nil, err
		}
	}
	p.Y.Min = math.Min(p.Y.Min, bound/2)
	p.Y.Max = math.Max(p.Y.Max, bound*1.15)
	p.Y.Scale = plot.LinearScale{}
	p.Y.Tick.Marker = plot.DefaultTicks{}
	return p, nil
}

// sizeTicks labels powers of four from 4 KiB as sizes.
type sizeTicks struct{}

func (sizeTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for v := 1024.0; v <= hi*1.0001; v *= 4 {
		if v < lo/1.0001 {
			continue
		}
		var label string
		switch {
		case v >= 1<<20:
			label = fmt.Sprintf("%.0fM", v/(1<<20))
		default:
			label = fmt.Sprintf("%.0fK", v/(1<<10))
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: label})
	}
	return ticks
}
