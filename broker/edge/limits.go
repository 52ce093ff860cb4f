package edge

import (
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Per-address and per-edge limits. Every accepted socket counts against
// its address (and the edge) from accept until it closes, whatever it turns
// out to be: WebSocket, REST or a socket that never sends a byte (slowloris),
// so one address cannot take the edge's descriptors or handshake slots.
// Upgrades, REST requests and unknown-scope lookups are also rate limited
// per address with token buckets.

// admitVerdict is the accept-time decision.
type admitVerdict uint8

const (
	admitOK       admitVerdict = iota
	admitAddrFull              // MaxConnsPerAddr reached: 429
	admitEdgeFull              // MaxConns reached: 503
	admitAddrDrop              // admitAddrFull with enough refusals being answered: close unread
	admitEdgeDrop              // admitEdgeFull likewise
)

// dropped reports whether v closes the socket unread, and the refusal it
// stands for.
func (v admitVerdict) dropped() (admitVerdict, bool) {
	if v >= admitAddrDrop {
		return v - (admitAddrDrop - admitAddrFull), true
	}
	return v, false
}

// maxRefusing bounds the over-limit sockets of one address being answered
// (429 or /healthz) at a time; beyond it they are closed unread.
const maxRefusing = 4

// addrEntry is one client address's state, guarded by limits.mu.
type addrEntry struct {
	addr     netip.Addr
	proxy    bool // a trusted proxy: no per-address socket limits
	conns    int
	shaking  int // admitted sockets still in their handshake
	refusing int
	upgrades *rate.Limiter
	rest     *rate.Limiter
	lookups  *rate.Limiter
	lastUse  time.Time
}

type limits struct {
	cfg *Config
	mu  sync.Mutex
	m   map[netip.Addr]*addrEntry
	// total counts admitted sockets.
	total int
	// sweepAt is the map size at which idle entries are next swept.
	sweepAt int
}

func newLimits(cfg *Config) *limits {
	return &limits{cfg: cfg, m: map[netip.Addr]*addrEntry{}, sweepAt: 1024}
}

// addrOf is the client a connection is counted against: its IPv4 address,
// or its IPv6 /64 (one subscriber's allocation: a client changing the low
// 64 bits is still one client).
func addrOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	return clientKey(ip)
}

func clientKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

// open admits a new socket from addr. The entry is returned in every case;
// admitOK and admitAddrFull/admitEdgeFull must be followed by close or
// doneRefusing respectively.
func (l *limits) open(addr netip.Addr) (*addrEntry, admitVerdict) {
	l.mu.Lock()
	defer l.mu.Unlock()
	en := l.entryLocked(addr)
	v := admitOK
	switch {
	case en.proxy:
		if l.total >= l.cfg.MaxConns {
			v = admitEdgeFull
		}
	case en.conns >= l.cfg.MaxConnsPerAddr, en.shaking >= l.cfg.MaxHandshakesPerAddr:
		v = admitAddrFull
	case l.total >= l.cfg.MaxConns:
		v = admitEdgeFull
	}
	if v != admitOK {
		if en.refusing >= maxRefusing {
			return en, v + (admitAddrDrop - admitAddrFull)
		}
		en.refusing++
		return en, v
	}
	en.conns++
	en.shaking++
	l.total++
	return en, admitOK
}

// handshakeDone ends an admitted socket's handshake (it stays counted in
// conns until close).
func (l *limits) handshakeDone(en *addrEntry) {
	l.mu.Lock()
	en.shaking--
	l.mu.Unlock()
}

func (l *limits) entryLocked(addr netip.Addr) *addrEntry {
	now := l.cfg.Now()
	en := l.m[addr]
	if en == nil {
		if len(l.m) >= l.sweepAt {
			l.sweepLocked(now)
		}
		en = &addrEntry{addr: addr, proxy: l.trusted(addr)}
		l.m[addr] = en
	}
	en.lastUse = now
	return en
}

// trusted reports whether addr is a trusted proxy's.
func (l *limits) trusted(addr netip.Addr) bool {
	for _, p := range l.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// client is the entry whose rate limits a request spends: for a trusted
// proxy, the client it forwards for (the rightmost X-Forwarded-For address
// that is not a trusted proxy, else X-Real-IP); otherwise en itself. A
// client cannot spoof its way out: only a trusted proxy's headers count.
func (l *limits) client(en *addrEntry, forwardedFor []string, realIP string) *addrEntry {
	if en == nil || !en.proxy {
		return en
	}
	var hops []string
	for _, v := range forwardedFor {
		hops = append(hops, strings.Split(v, ",")...)
	}
	if realIP != "" {
		hops = append([]string{realIP}, hops...) // the last resort
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return en // a malformed chain: count it against the proxy
		}
		a = clientKey(a)
		if l.trusted(a) {
			continue
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.entryLocked(a)
	}
	return en
}

// sweepLocked forgets addresses with nothing open and unused for a minute
// (their buckets have refilled long since).
func (l *limits) sweepLocked(now time.Time) {
	for a, en := range l.m {
		if en.conns == 0 && en.refusing == 0 && now.Sub(en.lastUse) > time.Minute {
			delete(l.m, a)
		}
	}
	l.sweepAt = max(1024, 2*len(l.m))
}

// close releases an admitted socket.
func (l *limits) close(en *addrEntry) {
	if en == nil {
		return
	}
	l.mu.Lock()
	en.conns--
	l.total--
	l.mu.Unlock()
}

// doneRefusing ends an over-limit socket's refusal.
func (l *limits) doneRefusing(en *addrEntry) {
	l.mu.Lock()
	en.refusing--
	l.mu.Unlock()
}

// bucket kinds.
type bucketKind uint8

const (
	bucketUpgrade bucketKind = iota
	bucketREST
	bucketLookup
)

// take takes a token of kind for en's address: 0 when granted, else how
// long until one is available.
func (l *limits) take(en *addrEntry, kind bucketKind) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		b          **rate.Limiter
		per, burst = l.cfg.UpgradesPerSecond, l.cfg.UpgradeBurst
	)
	switch kind {
	case bucketUpgrade:
		b = &en.upgrades
	case bucketREST:
		b, per, burst = &en.rest, l.cfg.RESTRequestsPerSecond, l.cfg.RESTBurst
	case bucketLookup:
		b, per, burst = &en.lookups, l.cfg.LookupsPerSecond, l.cfg.LookupBurst
	}
	if *b == nil {
		*b = rate.NewLimiter(rate.Limit(per), burst)
	}
	now := l.cfg.Now()
	en.lastUse = now
	r := (*b).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// takeAddr is take for an address not admitted through open (a REST
// request on a keep-alive connection is; this is for lookups by address).
func (l *limits) takeAddr(addr netip.Addr, kind bucketKind) time.Duration {
	l.mu.Lock()
	en := l.entryLocked(addr)
	l.mu.Unlock()
	return l.take(en, kind)
}

// retryAfter is a Retry-After value in whole seconds, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
