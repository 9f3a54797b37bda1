//! dspex._native (in progress).
