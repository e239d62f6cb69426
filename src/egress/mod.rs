//! Where room media leaves the gateway: WHEP viewers (later: relays).

pub mod whep;
