package certfile_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meridian-metrics/meridian/broker/certfile"
)

// A server whose certificate can be replaced on disk without a restart.
func ExampleReloader_ServerConfig() {
	dir, _ := os.MkdirTemp("", "certfile")
	defer os.RemoveAll(dir)
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := certfile.WriteSelfSigned(cert, key, "localhost"); err != nil {
		panic(err)
	}
	r, err := certfile.New(cert, key, nil)
	if err != nil {
		panic(err)
	}
	cfg := r.ServerConfig()
	fmt.Println(cfg.MinVersion == tls.VersionTLS12, r.Loads())
	// Output: true 1
}
