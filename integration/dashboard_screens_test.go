package integration

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/meridian-metrics/meridian/integration/browser"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// TestDashboardScreenshots renders the dashboard light and dark, on a phone
// (360 px) and a 4K wall (3840 px), checks that each honours the colour
// scheme and fits its width, and writes the PNGs to
// $MERIDIAN_SCREENSHOTS_DIR (scripts/screenshots sets it for the README) or
// a temporary directory. The page's JS must log no error throughout.
func TestDashboardScreenshots(t *testing.T) {
	dir := os.Getenv("MERIDIAN_SCREENSHOTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	// Some history, so the charts have lines to draw: 10 s in the test
	// suite, longer for the README ($MERIDIAN_SCREENSHOTS_WARMUP, e.g. 3m).
	warmup := 10 * time.Second
	if w := os.Getenv("MERIDIAN_SCREENSHOTS_WARMUP"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 {
			t.Fatalf("MERIDIAN_SCREENSHOTS_WARMUP=%q: want a duration such as 3m", w)
		}
		warmup = d
	}
	c := startDashCluster(t)
	log := recordSnapshots(t, c.wsURL)
	n := int(warmup / time.Second)
	wait.For(t, warmup+60*time.Second, fmt.Sprintf("%d cluster snapshots", n), func() bool { return log.count() >= n })

	b := browser.Start(t, browser.Options{})
	for _, tt := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{
		{"phone", 360, 780, true},
		{"wall", 3840, 2160, false},
	} {
		for _, scheme := range []string{"light", "dark"} {
			t.Run(tt.name+"-"+scheme, func(t *testing.T) {
				p := newWatchedPage(t, b)
				opts := []chromedp.EmulateViewportOption{}
				if tt.mobile {
					opts = append(opts, chromedp.EmulateMobile, chromedp.EmulatePortrait)
				}
				err := p.Do(30*time.Second,
					chromedp.EmulateViewport(tt.width, tt.height, opts...),
					chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
						_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
							Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
						})
						return err
					}))
				if err != nil {
					t.Fatal(err)
				}
				p.Navigate(c.httpURL + "/")
				// Live, tiles and a region row shown, every chart painted
				// (two animation frames after its points were set).
				if err := p.WaitJS(30*time.Second, `window.meridianDashboard.state().status === 'live' &&
					document.querySelectorAll('#tiles .tile').length >= 6 && document.querySelector('#regions tr[data-rate]') &&
					[...document.querySelectorAll('canvas')].every(c => Number(c.dataset.points) > 0)`); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(p.Context(), 10*time.Second)
				_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, chromedp.EvalAwaitPromise))
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				overflow, err := browser.Eval[int](p, `document.documentElement.scrollWidth - window.innerWidth`)
				if err != nil || overflow > 0 {
					t.Errorf("the page is %d px wider than the %d px viewport (%v)", overflow, tt.width, err)
				}
				shot, err := p.Screenshot()
				if err != nil {
					t.Fatal(err)
				}
				img, err := png.Decode(bytes.NewReader(shot))
				if err != nil {
					t.Fatal(err)
				}
				if w := img.Bounds().Dx(); w != int(tt.width) {
					t.Errorf("screenshot is %d px wide, want %d", w, tt.width)
				}
				// The page background, left of the content's padding.
				lum := luminance(img, 2, img.Bounds().Dy()/2)
				if dark := scheme == "dark"; dark && lum > 0.2 || !dark && lum < 0.8 {
					t.Errorf("%s scheme: background luminance %.2f", scheme, lum)
				}
				path := filepath.Join(dir, fmt.Sprintf("dashboard-%s-%s.png", tt.name, scheme))
				if err := os.WriteFile(path, shot, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %d×%d, %d KiB", path, img.Bounds().Dx(), img.Bounds().Dy(), len(shot)>>10)
			})
		}
	}
}

func luminance(img image.Image, x, y int) float64 {
	r, g, b, _ := img.At(x, y).RGBA()
	return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 0xffff
}
