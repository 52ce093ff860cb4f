// Package browser drives a real headless Chromium (Debian's chromium) over
// the DevTools protocol for tests that must prove what a person's browser
// does with Meridian: the Kairos guide's browser clients and the edge's
// dashboard.
//
// A Browser is one Chromium process owned by one test; Pages are tabs in it.
// Every page records console errors and uncaught exceptions from the moment
// it opens, so a test can assert that none happened during its whole run.
// Start registers cleanups that close every tab and end the process, so no
// goroutine or child process outlives the test (goleak-safe).
//
// Concurrency: a Page may be used from one goroutine at a time; Errors may be
// called from any goroutine.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Candidates are the executable names tried, in order, when MERIDIAN_CHROMIUM
// is unset. scripts/install-deps installs Debian's chromium.
var Candidates = []string{"chromium", "chromium-browser", "google-chrome"}

// Path returns the Chromium executable to use, or an error saying why none
// was found.
func Path() (string, error) {
	if p := os.Getenv("MERIDIAN_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, c := range Candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found (tried %s; scripts/install-deps installs Debian's chromium, or set MERIDIAN_CHROMIUM)", strings.Join(Candidates, ", "))
}

// Browser is one headless Chromium process.
type Browser struct {
	t      testing.TB
	ctx    context.Context // the browser context; tabs derive from it
	cancel context.CancelFunc
}

// Options tune a Browser. The zero value is a 1280×800 window.
type Options struct {
	Width, Height int
}

// Start launches Chromium for t. The test is skipped, with the reason, when
// no Chromium is installed: scripts/install-deps installs it, so in CI a
// skip means the package truly could not be installed.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Skip(err)
	}
	if o.Width == 0 {
		o.Width, o.Height = 1280, 800
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(o.Width, o.Height),
		// Root in a container has no user namespace sandbox to enter.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		// Tests drive loopback servers only; keep Chromium off the network.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	// The first action starts the browser process and its first tab.
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	b := &Browser{t: t, ctx: bctx, cancel: func() { bcancel(); acancel() }}
	t.Cleanup(b.close)
	return b
}

func (b *Browser) close() {
	// Cancel waits for the browser process to exit and its goroutines to end.
	_ = chromedp.Cancel(b.ctx)
	b.cancel()
}

// Page is one tab.
type Page struct {
	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the console reader has returned

	mu     sync.Mutex
	errors []string
}

// NewPage opens a tab; it is closed at the test's cleanup (before the
// browser).
func (b *Browser) NewPage() *Page {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	p := &Page{t: b.t, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		b.t.Fatalf("open tab: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		defer close(p.done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.record(m)
		}
	}()
	b.t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		<-p.done
	})
	return p
}

func (p *Page) record(m chromedp.ConsoleMessage) {
	if m.Type != chromedp.ConsoleError && !m.IsException() {
		return
	}
	p.mu.Lock()
	p.errors = append(p.errors, m.String())
	p.mu.Unlock()
}

// Errors returns every console error and uncaught exception recorded so far.
func (p *Page) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// Context is the tab's context, for chromedp actions the helpers do not
// cover.
func (p *Page) Context() context.Context { return p.ctx }

// Do runs chromedp actions in the tab with a deadline.
func (p *Page) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(url string) {
	p.t.Helper()
	if err := p.Do(30*time.Second, chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("navigate to %s: %v", url, err)
	}
}

// Eval evaluates a JavaScript expression and returns its value decoded as T.
func Eval[T any](p *Page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// ErrTimeout is returned by WaitJS when the condition did not hold in time.
var ErrTimeout = errors.New("condition not met before the deadline")

// WaitJS polls the JavaScript expression cond until it is truthy or timeout
// passes. It polls inside the page, so the test never sleeps.
func (p *Page) WaitJS(timeout time.Duration, cond string) error {
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[any](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) || ctx.Err() != nil {
			return fmt.Errorf("wait for %s: %w", cond, ErrTimeout)
		}
		return fmt.Errorf("wait for %s: %w", cond, err)
	}
	return nil
}

// Screenshot captures the full page as PNG.
func (p *Page) Screenshot() ([]byte, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}
