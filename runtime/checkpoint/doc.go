// Package checkpoint is sagefit's checkpoint format: a folder
// ckpt-<epoch>-<step> per checkpoint, holding variables.bin (every model and
// optimizer variable, raw, in contract order) and state.json (where training
// stood, every host's metric state, the history so far, and
// variables.bin's SHA-256), beside best.bin (weights callbacks keep) and
// hosts.bin (a stop's: every host's own averaged state) where there are any. Folders are written under a temporary name,
// synced and renamed, so a reader sees all of one or none; the newest K are
// kept, and a corrupt or partial one is skipped with a warning on resume.
//
// It knows the contract's value types (package model) and the history
// (package runtime/report); it must not import the session (model/tf), the
// fit loop or the collectives.
package checkpoint
