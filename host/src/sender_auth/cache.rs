//! Bounded caches of parsed DNS answers (SPF, DKIM key and DMARC records, addresses): an entry
//! lives for its TTL, an hour at most; a full cache drops what expired, then an eighth of the
//! rest, so that a flood of unique names costs memory up to the bound and no more. Over the
//! shared TXT cache, each message keeps the answers of its own lookups (records, even of TTL
//! zero, and failures: no record, no answer in time), so that its checks read every answer
//! fetched for it without asking again, and no failure is passed on to other messages.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mail_auth::{Parameters, RecordSet, ResolverCache, Txt, MX};

const MAX_TTL: Duration = Duration::from_secs(3600);

pub struct BoundedCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for BoundedCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.lock();
        let (value, until) = entries.get(name)?;
        (*until > Instant::now()).then(|| value.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let now = Instant::now();
        let until = valid_until.min(now + MAX_TTL);
        if until <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                let mut to_drop = (self.capacity / 8).max(1);
                entries.retain(|_, _| {
                    let keep = to_drop == 0;
                    to_drop = to_drop.saturating_sub(1);
                    keep
                });
            }
        }
        entries.insert(key, (value, until));
    }
}

/// The TXT answers of one message's checks: what its lookups found, found missing or could
/// not get, over the shared cache (where found records go too, for their TTL).
pub struct MessageTxt<'a> {
    shared: &'a BoundedCache<Box<str>, Txt>,
    answers: Mutex<HashMap<Box<str>, Txt>>,
}

impl MessageTxt<'_> {
    /// Records that the lookup of `name` ended in `error`, for this message's checks.
    pub fn keep_failure(&self, name: Box<str>, error: mail_auth::Error) {
        self.lock().insert(name, Txt::Error(error));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Txt>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolverCache<Box<str>, Txt> for MessageTxt<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let answer = self.lock().get(name).cloned();
        answer.or_else(|| self.shared.get(name))
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let answer = self.lock().remove(name);
        answer.or_else(|| self.shared.remove(name))
    }

    /// A found record goes to the shared cache for its TTL, and stays for this message's
    /// checks even with a TTL of zero (they read it after the lookups, maybe past the budget).
    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.lock().insert(key.clone(), value.clone());
        self.shared.insert(key, value, valid_until);
    }
}

/// One cache per kind of answer the checks look up.
pub struct Caches {
    txt: BoundedCache<Box<str>, Txt>,
    mx: BoundedCache<Box<str>, RecordSet<MX>>,
    ipv4: BoundedCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: BoundedCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: BoundedCache<IpAddr, RecordSet<Box<str>>>,
}

/// A message check's parameters: its own TXT answers, the shared caches for the rest.
pub type ForMessage<'x, P> = Parameters<
    'x,
    P,
    MessageTxt<'x>,
    BoundedCache<Box<str>, RecordSet<MX>>,
    BoundedCache<Box<str>, RecordSet<Ipv4Addr>>,
    BoundedCache<Box<str>, RecordSet<Ipv6Addr>>,
    BoundedCache<IpAddr, RecordSet<Box<str>>>,
>;

/// A check's parameters with every cache attached.
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    BoundedCache<Box<str>, Txt>,
    BoundedCache<Box<str>, RecordSet<MX>>,
    BoundedCache<Box<str>, RecordSet<Ipv4Addr>>,
    BoundedCache<Box<str>, RecordSet<Ipv6Addr>>,
    BoundedCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    /// Caches of `entries` answers in all; TXT records, the most asked for, get half.
    pub fn new(entries: usize) -> Caches {
        let share = (entries / 8).max(1);
        Caches {
            txt: BoundedCache::new((entries / 2).max(1)),
            mx: BoundedCache::new(share),
            ipv4: BoundedCache::new(share),
            ipv6: BoundedCache::new(share),
            ptr: BoundedCache::new(share),
        }
    }

    pub fn attach<P>(&self, params: P) -> Cached<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// The TXT answers of one message, over the shared ones.
    pub fn for_message(&self) -> MessageTxt<'_> {
        MessageTxt {
            shared: &self.txt,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// `params` with the message's TXT answers and the shared caches for the rest.
    pub fn attach_message<'x, P>(
        &'x self,
        params: P,
        txt: &'x MessageTxt<'x>,
    ) -> ForMessage<'x, P> {
        Parameters::new(params)
            .with_txt_cache(txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// Parsed TXT records held now.
    pub fn txt_entries(&self) -> usize {
        self.txt.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_entries_until_their_ttl() {
        let cache: BoundedCache<Box<str>, u32> = BoundedCache::new(4);
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert("a.".into(), 1, later);
        cache.insert("gone.".into(), 2, Instant::now());
        assert_eq!(cache.get("a."), Some(1));
        assert_eq!(cache.get("gone."), None, "an expired answer is not kept");
        assert_eq!(cache.remove("a."), Some(1));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_message_sees_its_own_failures_over_the_shared_answers() {
        let caches = Caches::new(64);
        let later = Instant::now() + Duration::from_secs(60);
        let record = |e: &str| {
            Txt::Error(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
                e.into(),
            )))
        };
        let name = |n: &str| -> Box<str> { n.into() };
        let one = caches.for_message();
        one.insert(name("found."), record("shared"), later);
        one.insert(name("ttl0."), record("now"), Instant::now());
        assert!(one.get("ttl0.").is_some(), "kept for the message's checks");
        one.keep_failure(
            name("silent."),
            mail_auth::Error::Dns(mail_auth::DnsError::Resolver("late".into())),
        );
        assert!(one.get("silent.").is_some());
        let other = caches.for_message();
        assert!(
            other.get("silent.").is_none(),
            "a failure stays with its message"
        );
        assert!(other.get("found.").is_some(), "found records are shared");
        assert!(other.get("ttl0.").is_none(), "for their TTL");
    }

    #[test]
    fn never_grows_past_its_bound() {
        let cache: BoundedCache<Box<str>, usize> = BoundedCache::new(64);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..10_000 {
            cache.insert(format!("name{i}.").into(), i, later);
            assert!(cache.len() <= 64);
        }
        assert_eq!(
            cache.get("name9999."),
            Some(9999),
            "the newest entry is kept"
        );
    }
}
