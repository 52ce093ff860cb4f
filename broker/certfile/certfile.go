// Package certfile serves a TLS certificate from PEM files that operators
// rotate in place: the files are checked (inode, size, modification time)
// on every handshake and reloaded when they changed, so a renewed
// certificate takes effect without a restart.
//
// # Concurrency
//
// A Reloader is safe for concurrent use (it is called from every handshake).
// A rotation that leaves the pair unreadable or mismatched (the key written
// before the certificate, say) keeps serving the previous certificate and
// retries on the next handshake.
package certfile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// stamp identifies a file version.
type stamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = uint64(st.Ino)
	}
	return s, nil
}

// Reloader holds the certificate of a certificate/key file pair.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu                  sync.Mutex
	cert                *tls.Certificate
	certStamp, keyStamp stamp
	loads               int
}

// New loads the pair once (an error if it cannot) and returns the
// Reloader. A nil log discards.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("load TLS certificate: both a certificate and a key file are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.reloadLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

// reloadLocked reloads the pair if either file changed.
func (r *Reloader) reloadLocked() error {
	cs, err := stampOf(r.certFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS key: %w", err)
	}
	if r.cert != nil && cs == r.certStamp && ks == r.keyStamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	if r.cert != nil {
		r.log.Info("TLS certificate reloaded", "cert", r.certFile)
	}
	r.cert, r.certStamp, r.keyStamp = &cert, cs, ks
	r.loads++
	return nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first when its files changed.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.reloadLocked(); err != nil {
		r.log.Warn("TLS certificate files changed but cannot be loaded; serving the previous certificate", "err", err)
	}
	return r.cert, nil
}

// Loads is how many times the pair was loaded (1 after New).
func (r *Reloader) Loads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loads
}

// ServerConfig is a TLS 1.2+ server configuration serving r's certificate.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}
