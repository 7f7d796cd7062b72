package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/internal/channel"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
)

func init() {
	register("channel publish", "write or update a signed update channel directory that any static web server serves", runChannelPublish)
}

func runChannelPublish(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw channel publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keys, tags, mcus bundleKeyFlag
	fs.Var(&keys, "key", "release signing key (PKCS#8 PEM); repeat for several signatures")
	signCmd := fs.String("sign-cmd", "", "sign with this command (HSM): message on stdin, signature on stdout")
	signPub := fs.String("sign-pub", "", "public key matching --sign-cmd")
	name := fs.String("channel", "stable", "channel name: the index goes to DIR/NAME/index.json")
	compatible := fs.String("compatible", "", "hardware compatible string of the entry (required)")
	fs.Var(&tags, "tag", "device tag the entry is for; repeat for several (devices need them all)")
	bundlePath := fs.String("bundle", "", "rootfs bundle of the entry")
	fs.Var(&mcus, "mcu", "MCU package of the entry; repeat for several")
	cfgPath := fs.String("config", "", "configuration document of the entry (checked with the config loader)")
	expires := fs.String("expires", "720h", "expiry of the index: a duration from now (720h, 30d) or an RFC 3339 time")
	seq := fs.Uint64("sequence", 0, "sequence number (default: one above the published index)")
	asJSON := fs.Bool("json", false, "print the index as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 || *compatible == "" || (len(keys) == 0 && *signCmd == "") || (*signCmd != "") != (*signPub != "") ||
		(*bundlePath == "" && len(mcus) == 0 && *cfgPath == "") {
		fmt.Fprintln(stderr, "usage: otagw channel publish DIR (--key K [--key K2] | --sign-cmd CMD --sign-pub PUB) --compatible C\n"+
			"         [--channel stable] [--tag T ...] [--bundle FILE] [--mcu PKG ...] [--config FILE]\n"+
			"         [--expires 720h|RFC3339] [--sequence N] [--json]")
		return 2
	}
	now := time.Now().UTC().Truncate(time.Second)
	until, err := bundleExpiry(*expires, now)
	if err != nil {
		fmt.Fprintf(stderr, "otagw channel publish: --expires: %v\n", err)
		return 2
	}
	o := channel.PublishOptions{Dir: pos[0], Channel: *name, Compatible: *compatible, Tags: tags, Bundle: *bundlePath,
		MCU: mcus, Config: *cfgPath, Expires: until.Sub(now), Sequence: *seq, Now: now,
		Check: publishCheck(*compatible)}
	for _, k := range keys {
		s, err := sign.LoadSigner(k)
		if err != nil {
			fmt.Fprintf(stderr, "otagw channel publish: --key: %v\n", err)
			return 1
		}
		o.Signers = append(o.Signers, s)
	}
	if *signCmd != "" {
		s, err := sign.CommandSigner(*signCmd, *signPub)
		if err != nil {
			fmt.Fprintf(stderr, "otagw channel publish: %v\n", err)
			return 1
		}
		o.Signers = append(o.Signers, s)
	}
	idx, err := channel.Publish(o)
	if err != nil {
		fmt.Fprintln(stderr, "otagw", err)
		return 1
	}
	if *asJSON {
		if err := writeJSON(stdout, idx); err != nil {
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "published %s/%s/%s: sequence %d, %d entr%s, expires %s\n", pos[0], *name, channel.IndexFile,
		idx.Sequence, len(idx.Entries), map[bool]string{true: "y", false: "ies"}[len(idx.Entries) == 1], idx.Expires.Format(time.RFC3339))
	return 0
}

// publishCheck reads each artifact before it is published: a bundle must
// be for compatible, an MCU package must parse, a config must validate.
func publishCheck(compatible string) func(kind, name string, data []byte) (string, error) {
	return func(kind, name string, data []byte) (string, error) {
		switch kind {
		case "bundle":
			h, err := bundle.ReadHead(bytes.NewReader(data), nil, 0)
			if err != nil {
				return "", fmt.Errorf("%s: not a bundle: %w", name, err)
			}
			if h.Manifest.Compatible != compatible {
				return "", fmt.Errorf("%s: the bundle is for compatible %q, not %q", name, h.Manifest.Compatible, compatible)
			}
			return h.Manifest.Version, nil
		case "mcu":
			p, err := mcupkg.Parse(data)
			if err != nil {
				return "", fmt.Errorf("%s: not an MCU package: %w", name, err)
			}
			return p.Manifest.Version, nil
		case "config":
			_, err := config.Parse(name, data)
			return "", err
		}
		return "", fmt.Errorf("%s: unknown kind %s", name, kind)
	}
}
