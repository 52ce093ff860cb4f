'use strict';
// A small canvas line chart for the dashboard: time on x, one or more lines
// on y, gaps left open rather than bridged. Charts repaint at most once per
// animation frame however many snapshots arrive, and read their colours from
// CSS variables so they follow the colour scheme.
const MeridianChart = (() => {
  const dirty = new Set();
  let frame = 0;
  const flush = () => { frame = 0; for (const c of dirty) c.draw(); dirty.clear(); };
  const schedule = (c) => { dirty.add(c); if (!frame) frame = requestAnimationFrame(flush); };
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // niceStep rounds a raw tick step to 1, 2 or 5 × 10^n.
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function timeLabel(ms, span) {
    const iso = new Date(ms).toISOString(); // UTC, like the timestamps on the wire
    return span > 86400e3 ? iso.slice(5, 10) + ' ' + iso.slice(11, 16) : iso.slice(11, span > 1800e3 ? 16 : 19);
  }

  class Chart {
    // opts: {zeroBased: bool, format: v => string}
    constructor(canvas, opts) {
      this.canvas = canvas;
      this.opts = Object.assign({ zeroBased: true, format: (v) => String(v) }, opts);
      this.lines = [];
      this.t0 = 0; this.t1 = 0; this.gapMs = Infinity;
      new ResizeObserver(() => schedule(this)).observe(canvas);
    }

    // lines: [{label, color: '--css-var', t: [ms], v: [number]}]; the window
    // is [t0, t1]; points further apart than gapMs are not joined.
    set(lines, t0, t1, gapMs) {
      this.lines = lines; this.t0 = t0; this.t1 = t1; this.gapMs = gapMs;
      this.canvas.dataset.points = lines.reduce((n, l) => n + l.t.length, 0);
      schedule(this);
    }

    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      }
      const g = c.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const font = parseFloat(getComputedStyle(c).fontSize) * 0.75;
      g.font = `${font}px system-ui, sans-serif`;
      const fg = cssVar('--muted'), grid = cssVar('--grid');

      let lo = Infinity, hi = -Infinity;
      for (const l of this.lines) for (const v of l.v) { if (v < lo) lo = v; if (v > hi) hi = v; }
      if (lo > hi) {
        g.fillStyle = fg; g.textAlign = 'center';
        g.fillText('waiting for data', w / 2, h / 2);
        return;
      }
      if (this.opts.zeroBased) lo = Math.min(lo, 0);
      if (hi - lo < 1e-9) { hi += 1; if (!this.opts.zeroBased) lo -= 1; }
      const ystep = niceStep((hi - lo) / 4);
      lo = Math.floor(lo / ystep) * ystep; hi = Math.ceil(hi / ystep) * ystep;

      let left = 0;
      for (let y = lo; y <= hi + ystep / 2; y += ystep) left = Math.max(left, g.measureText(this.opts.format(y)).width);
      const L = left + 8, R = w - 6, T = font + 6, B = h - font - 8;
      const X = (t) => L + (t - this.t0) / (this.t1 - this.t0 || 1) * (R - L);
      const Y = (v) => B - (v - lo) / (hi - lo) * (B - T);

      g.lineWidth = 1; g.strokeStyle = grid; g.fillStyle = fg;
      g.textAlign = 'right'; g.textBaseline = 'middle';
      for (let y = lo; y <= hi + ystep / 2; y += ystep) {
        g.beginPath(); g.moveTo(L, Y(y)); g.lineTo(R, Y(y)); g.stroke();
        g.fillText(this.opts.format(y), L - 4, Y(y));
      }
      g.textAlign = 'center'; g.textBaseline = 'top';
      const span = this.t1 - this.t0, ticks = Math.max(2, Math.floor((R - L) / (font * 9)));
      for (let i = 0; i <= ticks; i++) {
        const t = this.t0 + span * i / ticks;
        g.textAlign = i === 0 ? 'left' : i === ticks ? 'right' : 'center';
        g.fillText(timeLabel(t, span), X(t), B + 4);
      }

      g.lineWidth = 1.75; g.lineJoin = 'round';
      g.textAlign = 'right'; g.textBaseline = 'top';
      let legendX = R;
      for (const l of this.lines) {
        const color = cssVar(l.color);
        g.strokeStyle = color; g.beginPath();
        for (let i = 0; i < l.t.length; i++) {
          const joined = i > 0 && l.t[i] - l.t[i - 1] <= this.gapMs;
          if (joined) g.lineTo(X(l.t[i]), Y(l.v[i])); else g.moveTo(X(l.t[i]), Y(l.v[i]));
        }
        g.stroke();
        if (this.lines.length > 1) {
          g.fillStyle = color; g.fillText(l.label, legendX, 0);
          legendX -= g.measureText(l.label).width + font;
        }
      }
    }
  }

  return {
    Chart,
    redraw: (charts) => charts.forEach(schedule),
  };
})();
