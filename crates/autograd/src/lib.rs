//! Reverse-mode autograd over `tensor`.
