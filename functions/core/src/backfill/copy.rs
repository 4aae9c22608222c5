//! The copy of one image (to be written).
