package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nkeys"
)

// Generation defaults.
const (
	// DefaultValidity is how long generated certificates are valid; the CA
	// gets ten times as long, so that rotating leaf certificates never
	// requires redistributing it.
	DefaultValidity = 365 * 24 * time.Hour
)

// File names inside a secrets directory. Each identity ID has ID.nk (its
// NKey seed, secret) and, with ClientCerts, ID.pem and ID-key.pem.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "nats-server.pem"
	ServerKeyFile  = "nats-server-key.pem"
	AuthConfigFile = "nats-auth.conf"
)

// Gateway names a gateway credential: Region and Instance for one instance,
// Region alone for every instance of a region (scaled replicas).
type Gateway struct {
	Region   string
	Instance string
}

// ID is the gateway identity's name: gateway.<region>[.<instance>].
func (g Gateway) ID() string {
	if g.Instance == "" {
		return "gateway." + g.Region
	}
	return "gateway." + g.Region + "." + g.Instance
}

// Spec says what Generate writes.
type Spec struct {
	// Dir receives the files; created with mode 0700 if missing.
	Dir string
	// Hosts are the NATS servers' names and addresses, the subject
	// alternative names of their certificate. Routes are accepted only from
	// a peer whose certificate names one of the route URLs' hosts. Default
	// localhost and 127.0.0.1.
	Hosts []string
	// Gateways get one credential each. The operator, aggregator and edge
	// identities are always written.
	Gateways []Gateway
	// ClientCerts also writes a client certificate per identity, for
	// servers that require mutual TLS.
	ClientCerts bool
	// Validity of the leaf certificates. Default DefaultValidity.
	Validity time.Duration
	// Rotate replaces the server certificate and every identity's seed and
	// certificate, keeping the CA; the previous public keys stay in the
	// authorization config (with the same permissions) until the next
	// rotation, so that roles can be restarted one by one. Without Rotate,
	// a directory that already holds an authorization config is left as it
	// is.
	Rotate bool
	// Retire rewrites the authorization config with the current keys only,
	// dropping the previous ones a rotation kept; nothing else changes.
	Retire bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Result says what Generate did.
type Result struct {
	// Kept is true when the directory already held secrets and nothing was
	// written.
	Kept bool
	// IDs are the identities, in the order written.
	IDs []string
}

// identity is one NKey user to write.
type identity struct {
	id    string
	perms Permissions
}

// Generate writes a CA, the NATS server certificate, an NKey seed per
// identity, optionally client certificates, and the authorization config.
// Private keys and seeds get mode 0600; nothing is written outside Dir.
func Generate(spec Spec) (Result, error) {
	if spec.Dir == "" {
		return Result{}, errors.New("generate secrets: Spec.Dir is required")
	}
	if spec.Validity < 0 {
		return Result{}, fmt.Errorf("generate secrets: negative validity %s", spec.Validity)
	}
	if spec.Validity == 0 {
		spec.Validity = DefaultValidity
	}
	if len(spec.Hosts) == 0 {
		spec.Hosts = []string{"localhost", "127.0.0.1"}
	}
	if spec.Now == nil {
		spec.Now = time.Now
	}
	ids := []identity{
		{"operator", OperatorPermissions()},
		{"aggregator", AggregatorPermissions()},
		{"edge", EdgePermissions()},
	}
	for _, g := range spec.Gateways {
		p, err := GatewayPermissions(g.Region, g.Instance)
		if err != nil {
			return Result{}, fmt.Errorf("generate secrets: %w", err)
		}
		ids = append(ids, identity{g.ID(), p})
	}
	res := Result{}
	for _, id := range ids {
		res.IDs = append(res.IDs, id.id)
	}
	authPath := filepath.Join(spec.Dir, AuthConfigFile)
	if spec.Retire {
		if spec.Rotate {
			return Result{}, errors.New("generate secrets: Rotate and Retire are separate steps")
		}
		return res, retire(authPath, spec.Dir, ids)
	}
	if _, err := os.Stat(authPath); err == nil && !spec.Rotate {
		res.Kept = true
		return res, nil
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	now := spec.Now()
	ca, err := ensureCA(spec.Dir, now, 10*spec.Validity)
	if err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	server, err := ca.issue(now, spec.Validity, "meridian-nats", spec.Hosts, true)
	if err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	if err := writePair(spec.Dir, ServerCertFile, ServerKeyFile, server); err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	var users []User
	for _, id := range ids {
		seedPath := filepath.Join(spec.Dir, id.id+".nk")
		if old, err := publicKeyOf(seedPath); err == nil {
			users = append(users, User{Name: id.id + " (previous key, dropped at the next rotation)", PublicKey: old, Permissions: id.perms})
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Result{}, fmt.Errorf("generate secrets: %w", err)
		}
		kp, err := nkeys.CreateUser()
		if err != nil {
			return Result{}, fmt.Errorf("generate secrets: create nkey for %s: %w", id.id, err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		if err := writeFile(seedPath, append(seed, '\n'), 0o600); err != nil {
			return Result{}, fmt.Errorf("generate secrets: %w", err)
		}
		users = append(users, User{Name: id.id, PublicKey: pub, Permissions: id.perms})
		if spec.ClientCerts {
			c, err := ca.issue(now, spec.Validity, "meridian-"+id.id, nil, false)
			if err != nil {
				return Result{}, fmt.Errorf("generate secrets: %w", err)
			}
			if err := writePair(spec.Dir, id.id+".pem", id.id+"-key.pem", c); err != nil {
				return Result{}, fmt.Errorf("generate secrets: %w", err)
			}
		}
	}
	var conf bytes.Buffer
	if err := WriteAuthConfig(&conf, users); err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	// The config last: its presence means the directory is complete.
	if err := writeFile(authPath, conf.Bytes(), 0o644); err != nil {
		return Result{}, fmt.Errorf("generate secrets: %w", err)
	}
	return res, nil
}

// ensureCA loads the CA in dir, or creates it.
func ensureCA(dir string, now time.Time, validity time.Duration) (keyPair, error) {
	certPEM, cerr := os.ReadFile(filepath.Join(dir, CAFile))
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if cerr == nil && kerr == nil {
		return loadCA(certPEM, keyPEM)
	}
	ca, err := newCA(now, validity)
	if err != nil {
		return keyPair{}, err
	}
	return ca, writePair(dir, CAFile, CAKeyFile, ca)
}

func writePair(dir, certName, keyName string, k keyPair) error {
	keyPEM, err := k.keyPEM()
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, keyName), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, certName), k.certPEM(), 0o644)
}

// writeFile replaces path atomically, so that a reader never sees half a key.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// publicKeyOf reads an NKey seed file and returns its public key.
func publicKeyOf(seedPath string) (string, error) {
	data, err := os.ReadFile(seedPath)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
	if err != nil {
		return "", fmt.Errorf("read seed %s: %w", seedPath, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// retire writes the authorization config with the current key of each
// identity only.
func retire(authPath, dir string, ids []identity) error {
	var users []User
	for _, id := range ids {
		pub, err := publicKeyOf(filepath.Join(dir, id.id+".nk"))
		if err != nil {
			return fmt.Errorf("retire previous keys: %w", err)
		}
		users = append(users, User{Name: id.id, PublicKey: pub, Permissions: id.perms})
	}
	var conf bytes.Buffer
	if err := WriteAuthConfig(&conf, users); err != nil {
		return fmt.Errorf("retire previous keys: %w", err)
	}
	if err := writeFile(authPath, conf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("retire previous keys: %w", err)
	}
	return nil
}
