// Package policy owns a guest's firewall policy: its JSON form, validation
// with specific errors, and compilation into the kernel's classification
// structures (per-field prefix entries carrying sparse rule bitmaps). Evaluate
// is the reference semantics the compiled form is tested against.
package policy
