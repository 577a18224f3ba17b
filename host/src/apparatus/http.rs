//! The HTTP apparatus wire protocol (being written).
