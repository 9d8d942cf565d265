//! fleetwake: wake Windows devices for MDM through WNS raw push, at fleet scale.
pub mod wns;
