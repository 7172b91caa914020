//! `vlmprep serve`: the sidecar that feeds a trainer packed batches through shared memory.
//!
//! One server per data-parallel rank. It plans the pool from headers (the `plan` stage), then
//! materializes its rank's packs — tiles decoded, resized and normalized by the backend, plus
//! `input_ids`, `labels`, `position_ids`, `cu_seqlens` and `image_spans` (the same fields as
//! `vlmprep pack --materialize`) — into a ring of `--prefetch` fixed-size slots in a memfd. The
//! trainer's client (`python/vlmprep_client`) maps the memfd and reads each batch as numpy
//! arrays viewing the slot, without a copy. Memory is bounded by prefetch × the largest pack.
//!
//! Which packs, in which order, and how a job resumes on another number of ranks is defined in
//! [`order`] (the resume contract).
//!
//! # Protocol
//!
//! A Unix stream socket, one JSON object per line each way; one client at a time.
//!
//! 1. client → `{"op":"hello","state":STATE|null,"position":J|null}`. `state` is a
//!    [`order::RankState`] (the client's `state_dict()`): the stream restarts at its `consumed`
//!    position, after checking it is this rank's job. Else `position`, else the oldest batch
//!    the previous client did not release (a trainer that died and reconnects without state).
//! 2. server → `{"op":"ready","version":1,"rank","world","fingerprint","cursor","position",
//!    "slots","slot_bytes","bounds"}` with the memfd attached to this message (`SCM_RIGHTS`).
//!    A refused hello gets `{"op":"error","message"}` and the connection is closed.
//! 3. client → `{"op":"next","release":[SLOT...]}`: frees the slots it is done with, asks for
//!    the next batch. server → `{"op":"batch","position","global","epoch","pack","slot",
//!    "samples":[{"key","shard"}],"skipped":[{"key","shard","kind","message"}],
//!    "arrays":{NAME:{"dtype","shape","offset"}}}` (offsets in bytes from the start of the
//!    memfd; arrays: input_ids, labels, position_ids, cu_seqlens, image_spans `[I,4]`: token
//!    start, span length, first row of pixel_values, rows; pixel_values `[T,3,S,S]` float or
//!    `[T,S,S,3]` u8 tiles, or for qwen2vl `[P,1176]` flattened patches plus `image_grid_thw`
//!    `[I,3]`, as transformers' Qwen2-VL processor makes them; see `pipeline::pixels`), or
//!    `{"op":"end"}` once the rank's stream is done. A batch's slot is not written again
//!    until it is released. A batch may have no samples (every sample of the pack failed); it
//!    still occupies its stream position.
//! 4. client → `{"op":"bye"}` or hang up. The server keeps its state and serves the next
//!    client; with `exit_at_end` it exits after a client that was sent `end` hangs up.
//!
//! Bad samples (undecodable image, shard changed since the plan) are left out of their pack,
//! logged to stderr with the reason and named in the batch's `skipped`; the stream goes on.

pub mod order;
pub mod server;
pub mod shm;

pub use order::{Cursor, PackOrder, RankState, RankStream, resume_cursor};
pub use server::{ServeConfig, ServeSummary, read_resume, serve};
