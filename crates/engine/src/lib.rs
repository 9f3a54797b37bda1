//! dspex engine (in progress).
