package report

import (
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Size of the PNG that WriteLossPlot writes, in pixels: PlotWidth wide and
// PanelHeight high for each panel.
const (
	PlotWidth   = 800
	PanelHeight = 450
	plotDPI     = 96
)

// WriteLossPlot writes a PNG of the history to path: a panel with the
// losses (every metric whose name ends in "loss": loss, val_loss, ...) and,
// when the history has other metrics (accuracy, val_accuracy, ...), a
// second panel below with those. Validation curves are dashed, in the
// color of their training curve. Values that are NaN or infinite are left
// out of the curves.
func WriteLossPlot(h *History, path string) (err error) {
	defer func() {
		// gonum's axes panic on ranges they cannot tick; a picture is not
		// worth the job.
		if r := recover(); r != nil {
			err = fmt.Errorf("plot history: %v", r)
		}
	}()
	var losses, others []string
	for _, name := range h.Names() {
		if strings.HasSuffix(name, "loss") {
			losses = append(losses, name)
		} else {
			others = append(others, name)
		}
	}
	var panels []*plot.Plot
	for _, group := range []struct {
		title string
		names []string
	}{{"Loss", losses}, {"Metrics", others}} {
		if len(group.names) == 0 {
			continue
		}
		p, err := panel(h, group.title, group.names)
		if err != nil {
			return fmt.Errorf("plot history: %w", err)
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return errors.New("plot history: the history has no metrics")
	}

	img := image.NewRGBA(image.Rect(0, 0, PlotWidth, PanelHeight*len(panels)))
	c := vgimg.NewWith(vgimg.UseImage(img), vgimg.UseDPI(plotDPI))
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 8, PadY: 12}
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, draw.New(c))
	for i, p := range panels {
		p.Draw(canvases[i][0])
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot history: %w", err)
	}
	_, err = vgimg.PngCanvas{Canvas: c}.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("plot history %s: %w", path, err)
	}
	return nil
}

// panel plots the named metrics against the epoch.
func panel(h *History, title string, names []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "Epoch"
	p.X.Tick.Marker = epochTicks{}
	p.Add(plotter.NewGrid())

	// Training and validation curves of one metric share a color.
	colors := map[string]int{}
	for _, name := range names {
		base := strings.TrimPrefix(name, "val_")
		if _, ok := colors[base]; !ok {
			colors[base] = len(colors)
		}
	}
	rising := 0 // curves that end above where they start, less those that end below
	for _, name := range names {
		var pts plotter.XYs
		for i, v := range h.Values(name) {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				pts = append(pts, plotter.XY{X: float64(i + 1), Y: v})
			}
		}
		if len(pts) == 0 {
			continue
		}
		switch last := pts[len(pts)-1].Y; {
		case last > pts[0].Y:
			rising++
		case last < pts[0].Y:
			rising--
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		col := plotutil.Color(colors[strings.TrimPrefix(name, "val_")])
		line.Color, points.Color = col, col
		line.Width = vg.Points(1.5)
		points.Radius = vg.Points(2)
		if strings.HasPrefix(name, "val_") {
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		}
		p.Add(line, points)
		p.Legend.Add(name, line, points)
	}
	p.X.Min, p.X.Max = 1, max(p.X.Max, 2) // epochs count from 1
	if span := p.Y.Max - p.Y.Min; !math.IsInf(span, 0) && span <= 1e-9*math.Max(math.Abs(p.Y.Min), math.Abs(p.Y.Max)) {
		// One value (a single epoch, a flat curve): gonum widens such a
		// range by ±1, which is lost beyond 2^53 and leaves nothing to tick.
		pad := math.Max(1, 0.05*math.Max(math.Abs(p.Y.Min), math.Abs(p.Y.Max)))
		p.Y.Min, p.Y.Max = p.Y.Min-pad, p.Y.Max+pad
	}
	// The legend goes to the right corner the curves leave free: the top
	// for falling losses, the bottom for rising accuracies.
	p.Legend.Top = rising <= 0
	return p, nil
}

// epochTicks puts ticks on whole epochs only, at most about ten labelled.
type epochTicks struct{}

func (epochTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := math.Ceil(lo), math.Floor(hi)
	if last < first {
		return nil
	}
	step := math.Max(1, math.Ceil((last-first+1)/10))
	var ticks []plot.Tick
	for v := first; v <= last; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	return ticks
}
