package auth_test

import (
	"context"
	"fmt"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// A token restricted to region eu, minted and verified with an HMAC secret.
func ExampleVerifier_Verify() {
	secret := []byte("an-example-secret-of-32-bytes-or-more")
	tok, err := auth.MintHMAC(secret, auth.MintOptions{TTL: time.Hour, Audience: "meridian", Scopes: []string{"region.eu"}})
	if err != nil {
		panic(err)
	}
	v, err := auth.NewVerifier(context.Background(), auth.Config{HMACSecret: secret, Audience: "meridian"})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	g, err := v.Verify(context.Background(), tok)
	fmt.Println(err, g, g.Allows(proto.RegionScope("eu")), g.Allows(proto.ClusterScope()))
	// Output: <nil> region.eu true false
}

// Extract finds the token wherever the client put it; a browser offers it
// as a WebSocket subprotocol, which the server must echo.
func ExampleExtract() {
	p, err := auth.Extract(nil, "region=eu", []string{"kairos, bearer.eyJhbGciOi.e30.sig"})
	fmt.Println(p.Token, p.Protocol, err)
	// Output: eyJhbGciOi.e30.sig bearer.eyJhbGciOi.e30.sig <nil>
}
