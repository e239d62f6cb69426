use super::*;

#[test]
fn rate_limit_refills() {
    let r = RateLimiter::default();
    let allowed = (0..25).filter(|_| r.allow("a", 20)).count();
    assert_eq!(allowed, 20, "a burst is capped at the per-second rate");
    assert!(r.allow("b", 20), "buckets are per SecretId");
    assert!(r.allow("a", 0), "0 disables the limit");
}

#[test]
fn request_ids_are_uuids() {
    let id = request_id();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_ne!(id, request_id());
}
