package abboot

import (
	"fmt"
	"maps"
	"strings"
)

// NotePrefix starts the name of every variable that the daemon keeps in the
// boot environment for itself (boot.cmd never reads them; its own variables
// are otagw_mode, otagw_slot, ...): a second copy, outside the state
// directory, of what must survive the loss or replay of the state file,
// written in the same environment write as the boot change it belongs to.
const NotePrefix = "otagw_anchor_"

// Notes returns the daemon's own variables (names starting with NotePrefix).
func (c *Chooser) Notes() (map[string]string, error) {
	env, err := c.read()
	if err != nil {
		return nil, fmt.Errorf("notes: %w", err)
	}
	out := map[string]string{}
	for k, v := range env {
		if strings.HasPrefix(k, NotePrefix) {
			out[k] = v
		}
	}
	return out, nil
}

// SetNotes writes otagw's own variables in one environment write; an
// empty value deletes the variable. Nothing is written when nothing changes.
func (c *Chooser) SetNotes(notes map[string]string) error {
	if err := checkNotes(notes); err != nil {
		return err
	}
	return c.update("set notes", c.opts.Slots[0], func(env map[string]string) { applyNotes(env, notes) })
}

// SetPrimaryNoting is SetPrimary plus notes, in one environment write: a
// power cut leaves either neither or both.
func (c *Chooser) SetPrimaryNoting(slot string, tries int, notes map[string]string) error {
	if err := checkNotes(notes); err != nil {
		return err
	}
	if tries <= 0 {
		tries = c.opts.PrimaryTries
	}
	if tries > 255 {
		return fmt.Errorf("set primary %s: %w: tries %d > 255", slot, ErrOptions, tries)
	}
	return c.update("set primary", slot, func(env map[string]string) {
		c.logic.setPrimary(env, slot, tries)
		applyNotes(env, notes)
	})
}

func checkNotes(notes map[string]string) error {
	for k, v := range notes {
		if !strings.HasPrefix(k, NotePrefix) || strings.ContainsAny(k, "= \t\n") {
			return fmt.Errorf("%w: note %q: names start with %q and hold no '=' or blanks", ErrOptions, k, NotePrefix)
		}
		if strings.ContainsAny(v, "\x00\n") {
			return fmt.Errorf("%w: note %s: value holds a NUL or newline", ErrOptions, k)
		}
	}
	return nil
}

func applyNotes(env, notes map[string]string) {
	for k, v := range maps.Clone(notes) {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
}
