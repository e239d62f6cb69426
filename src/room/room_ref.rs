//! `RoomRef`: which room of an app, numeric or string, as TRTC tells them apart.

/// Which room within an app (TRTC's `roomid` or `strRoomId`). Numeric and string rooms are different rooms, even "123" and 123.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoomRef {
    /// A numeric room (TRTC's `roomid`, RoomIdType 1).
    Num(u32),
    /// A string room (TRTC's `strRoomId`, RoomIdType 0).
    Str(String),
}

impl RoomRef {
    /// The id as text and its kind (`string`/`number`), as room listings and the cluster's records write them.
    pub fn id_and_kind(&self) -> (String, &'static str) {
        match self {
            RoomRef::Str(s) => (s.clone(), "string"),
            RoomRef::Num(n) => (n.to_string(), "number"),
        }
    }
}

impl std::fmt::Display for RoomRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomRef::Num(n) => write!(f, "numeric room {n}"),
            RoomRef::Str(s) => write!(f, "string room {s:?}"),
        }
    }
}
