//! Optimizers over flat parameter buffers (issue 6 fills this).
