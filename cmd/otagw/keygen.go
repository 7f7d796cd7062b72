package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/otagw/otagw/internal/sign"
)

func init() {
	register("keygen", "make an ed25519 signing key pair: DIR/NAME.key (0600) and DIR/NAME.pub", runKeygen)
}

func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory for the key pair (required)")
	name := fs.String("name", "signing", "file name stem: NAME.key and NAME.pub")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: otagw keygen --out DIR [--name NAME] [--json]")
		return 2
	}
	priv, pub, err := sign.GenerateKey(*out, *name)
	if err != nil {
		fmt.Fprintf(stderr, "otagw keygen: %v\n", err)
		return 1
	}
	k, err := sign.LoadPublicKey(pub)
	if err != nil {
		fmt.Fprintf(stderr, "otagw keygen: %v\n", err)
		return 1
	}
	if *asJSON {
		writeJSON(stdout, map[string]string{"private": priv, "public": pub, "key_id": sign.KeyID(k)})
		return 0
	}
	fmt.Fprintf(stdout, "private key %s (keep it secret)\npublic key  %s (copy it into the gateways' keyring)\nkey ID      %s\n", priv, pub, sign.KeyID(k))
	return 0
}
