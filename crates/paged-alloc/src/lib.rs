//! Page-granular allocator for optimizer state that pages between device and host memory.
//!
//! Empty for now: issue 6 ("Paged optimizers") fills it.
