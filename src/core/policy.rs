//! Who may call what: identities, destinations and limits, as one pure decision.
//!
//! Input: who asks ([`Origin`]), the destination, the message, the clock and the usage so far
//! ([`Usage`]); output: allow, or a [`Refusal`] whose Display is the reply. Every adapter gets
//! the same decisions. Deny by default: a chat platform with no allow-list, or an empty one,
//! refuses everyone; `open` lifts only the identity check, never the destination rules or
//! limits. The rules name no platform: allow-lists are keyed by [`Platform`], and only the
//! operator's own ways in ([`Platform::is_operator`]) skip them and the per-requester quotas.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use phonenumber::Type;

use super::call::{Origin, Platform};
use super::phone::{PhoneNumber, Region};

/// Number types fraud uses (premium rate, shared cost, …), as libphonenumber classifies them.
const REFUSED_TYPES: &[(Type, &str)] = &[
    (Type::PremiumRate, "a premium-rate number"),
    (Type::SharedCost, "a shared-cost number"),
    (Type::Uan, "a universal access number"),
    (Type::Voip, "a VoIP number"),
    (Type::PersonalNumber, "a personal-number service"),
    (Type::Pager, "a pager"),
    (Type::Voicemail, "a voicemail access number"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub per_user_hour: u32,
    pub per_user_day: u32,
    pub per_destination_hour: u32,
    /// Calls per hour, whoever asks (chat, console and CLI together).
    pub global_hour: u32,
    /// Calls per day, whoever asks.
    pub global_day: u32,
    pub max_concurrent: u32,
    pub message_max_chars: usize,
}

/// Who may call from one platform: any listed person, anyone in a listed chat (Telegram
/// chat, Slack channel, …), anyone in a listed team (Slack workspace, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub users: HashSet<String>,
    pub chats: HashSet<String>,
    pub teams: HashSet<String>,
}

impl AllowList {
    pub fn allows(&self, origin: &Origin) -> bool {
        self.users.contains(origin.requester.as_str())
            || self.chats.contains(origin.chat.as_str())
            || origin
                .team
                .as_ref()
                .is_some_and(|t| self.teams.contains(t.as_str()))
    }
}

/// The effective policy (built from `[access]` and `[limits]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub open: bool,
    /// Allow-lists by platform; a platform without an entry refuses everyone (unless `open`).
    pub access: HashMap<Platform, AllowList>,
    /// Allowed destination regions (ISO codes, upper case).
    pub countries: HashSet<String>,
    pub allow_numbers: HashSet<String>,
    pub deny_numbers: HashSet<String>,
    pub limits: Limits,
}

/// Why a request was refused; Display is what the requester reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed {
        platform: Platform,
        id: String,
    },
    Denied {
        number: String,
    },
    Country {
        number: String,
        country: String,
        allowed: Vec<String>,
    },
    NumberType {
        number: String,
        kind: &'static str,
    },
    MessageTooLong {
        len: usize,
        max: usize,
    },
    /// The call's instructions, sent inline because the provider cannot fetch them (no
    /// public URL), would be longer than the provider takes.
    InstructionsTooLong {
        len: usize,
        max: usize,
    },
    /// The call asks for something (`feature`) that needs the provider to call back, and
    /// it cannot (no public URL).
    NeedsCallbacks {
        feature: &'static str,
    },
    /// A language with no voice configured (`[voices]`): `known` lists the ones there are.
    UnknownLanguage {
        asked: String,
        known: Vec<String>,
    },
    /// A text longer than the voice speaks in one `<Say>` (Twilio error 13521).
    SayTooLong {
        len: usize,
        max: usize,
        voice: String,
    },
    UserHour {
        limit: u32,
        retry_in: Duration,
    },
    UserDay {
        limit: u32,
        retry_in: Duration,
    },
    Destination {
        number: String,
        limit: u32,
        retry_in: Duration,
    },
    Concurrent {
        max: u32,
    },
    /// The cap across all requesters for the last hour.
    GlobalHour {
        limit: u32,
        retry_in: Duration,
    },
    /// The cap across all requesters for the last 24 hours.
    GlobalDay {
        limit: u32,
        retry_in: Duration,
    },
}

/// The families of refusals, for HTTP statuses and audit logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Who asks (HTTP 403).
    Identity,
    /// What was asked: destination or message (HTTP 422).
    Request,
    /// Too many, too soon (HTTP 429).
    Limit,
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::NotAllowed { .. } => RefusalKind::Identity,
            Self::Denied { .. }
            | Self::Country { .. }
            | Self::NumberType { .. }
            | Self::MessageTooLong { .. }
            | Self::InstructionsTooLong { .. }
            | Self::NeedsCallbacks { .. }
            | Self::UnknownLanguage { .. }
            | Self::SayTooLong { .. } => RefusalKind::Request,
            _ => RefusalKind::Limit,
        }
    }

    /// A short machine-readable reason for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } => "not_allowed",
            Self::Denied { .. } => "denied_number",
            Self::Country { .. } => "country",
            Self::NumberType { .. } => "number_type",
            Self::MessageTooLong { .. } => "message_too_long",
            Self::InstructionsTooLong { .. } => "instructions_too_long",
            Self::NeedsCallbacks { .. } => "needs_callbacks",
            Self::UnknownLanguage { .. } => "unknown_language",
            Self::SayTooLong { .. } => "say_too_long",
            Self::UserHour { .. } => "user_hourly_limit",
            Self::UserDay { .. } => "user_daily_limit",
            Self::Destination { .. } => "destination_limit",
            Self::Concurrent { .. } => "concurrent_limit",
            Self::GlobalHour { .. } => "global_hourly_limit",
            Self::GlobalDay { .. } => "global_daily_limit",
        }
    }
}

/// What one request asks for.
pub struct Request<'a> {
    pub origin: &'a Origin,
    pub to: &'a PhoneNumber,
    pub message: Option<&'a str>,
}

impl Policy {
    /// Decides one request. Pure: time and usage come in as arguments.
    pub fn check(
        &self,
        req: &Request<'_>,
        usage: &Usage,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        self.check_request(req)?;
        self.limits.check(req.origin, req.to, usage, now)
    }

    /// Everything but the limits: who asks, the destination, the message. The limits are
    /// checked where usage is counted ([`Limits::check`] on this process's [`Usage`], or a
    /// ledger shared by several instances), in one step with counting the request.
    pub fn check_request(&self, req: &Request<'_>) -> Result<(), Refusal> {
        self.check_identity(req.origin)?;
        self.check_destination(req.to)?;
        if let Some(message) = req.message {
            let len = message.chars().count();
            if len > self.limits.message_max_chars {
                return Err(Refusal::MessageTooLong {
                    len,
                    max: self.limits.message_max_chars,
                });
            }
        }
        Ok(())
    }

    pub fn check_identity(&self, origin: &Origin) -> Result<(), Refusal> {
        // The console is guarded by its token (required off loopback); the CLI is the operator.
        let allowed = self.open
            || origin.platform.is_operator()
            || self
                .access
                .get(&origin.platform)
                .is_some_and(|list| list.allows(origin));
        if allowed {
            Ok(())
        } else {
            Err(Refusal::NotAllowed {
                platform: origin.platform,
                id: origin.requester.to_string(),
            })
        }
    }

    pub fn check_destination(&self, to: &PhoneNumber) -> Result<(), Refusal> {
        let shown = to.display();
        if self.deny_numbers.contains(to.e164()) {
            return Err(Refusal::Denied { number: shown });
        }
        if self.allow_numbers.contains(to.e164()) {
            return Ok(());
        }
        let region = to.region();
        let code = region
            .as_ref()
            .map(|r| r.code().to_owned())
            .unwrap_or_default();
        if !self.countries.contains(&code) {
            let mut allowed: Vec<String> = self
                .countries
                .iter()
                .map(|c| Region::parse(c).map_or_else(|| c.clone(), |r| r.name()))
                .collect();
            allowed.sort();
            return Err(Refusal::Country {
                number: shown,
                country: region.map_or_else(|| "an unknown country".to_owned(), |r| r.name()),
                allowed,
            });
        }
        let kind = to.number_type();
        if let Some((_, label)) = REFUSED_TYPES.iter().find(|(t, _)| *t == kind) {
            return Err(Refusal::NumberType {
                number: shown,
                kind: label,
            });
        }
        Ok(())
    }

    /// The policy in words, for `callbot check-config`.
    pub fn describe(&self) -> String {
        let list = |set: &HashSet<String>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                let mut v: Vec<_> = set.iter().cloned().collect();
                v.sort();
                v.join(", ")
            }
        };
        let l = &self.limits;
        let mut platforms: Vec<_> = self.access.iter().collect();
        platforms.sort_by_key(|(p, _)| p.as_str());
        let access: String = platforms
            .into_iter()
            .map(|(platform, a)| {
                format!(
                    "{:<17}users {}; chats {}; teams {}\n",
                    format!("{platform}:"),
                    list(&a.users),
                    list(&a.chats),
                    list(&a.teams)
                )
            })
            .collect();
        format!(
            "access:          {}\n\
             {access}\
             destinations:    countries {}; always allowed {}; denied {}; never premium-rate, shared-cost, UAN, VoIP, personal, pager, voicemail\n\
             limits:          {}/hour and {}/day per requester, {}/hour per number, {}/hour and {}/day for everyone together, {} at once, messages up to {} characters",
            if self.open {
                "OPEN: anyone may call (demo mode)"
            } else {
                "allow-lists only (deny by default)"
            },
            list(&self.countries),
            list(&self.allow_numbers),
            list(&self.deny_numbers),
            l.per_user_hour,
            l.per_user_day,
            l.per_destination_hour,
            l.global_hour,
            l.global_day,
            l.max_concurrent,
            l.message_max_chars,
        )
    }
}

impl Limits {
    /// Checks the limits in their order (as [`Limit`] lists them) against the usage so far.
    pub fn check(
        &self,
        origin: &Origin,
        to: &PhoneNumber,
        usage: &Usage,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let l = self;
        if usage.active() >= l.max_concurrent as usize {
            return Err(l.refusal(Limit::Concurrent, to, Duration::zero()));
        }
        // Per-requester quotas are for every chat platform, known to core or not; the
        // operator's own ways in (console behind its token, CLI) have none. Destination and
        // concurrency limits apply to everyone.
        if has_quota(origin) {
            let user = requester_key(origin);
            for limit in [Limit::UserHour, Limit::UserDay] {
                if let Some(retry_in) = usage.users.full(&user, l.cap(limit), limit.window(), now) {
                    return Err(l.refusal(limit, to, retry_in));
                }
            }
        }
        // The caps across everyone: chat, console and CLI alike.
        for limit in [Limit::GlobalHour, Limit::GlobalDay] {
            if let Some(retry_in) = usage
                .everyone
                .full(EVERYONE, l.cap(limit), limit.window(), now)
            {
                return Err(l.refusal(limit, to, retry_in));
            }
        }
        let limit = Limit::Destination;
        if let Some(retry_in) =
            usage
                .destinations
                .full(to.e164(), l.cap(limit), limit.window(), now)
        {
            return Err(l.refusal(limit, to, retry_in));
        }
        Ok(())
    }

    /// How many `limit` allows.
    pub fn cap(&self, limit: Limit) -> u32 {
        match limit {
            Limit::Concurrent => self.max_concurrent,
            Limit::UserHour => self.per_user_hour,
            Limit::UserDay => self.per_user_day,
            Limit::GlobalHour => self.global_hour,
            Limit::GlobalDay => self.global_day,
            Limit::Destination => self.per_destination_hour,
        }
    }

    /// The refusal when `limit` is reached for a call to `to`; `retry_in` is when the oldest
    /// counted entry leaves the window (not shown for the live-call cap).
    pub fn refusal(&self, limit: Limit, to: &PhoneNumber, retry_in: Duration) -> Refusal {
        let cap = self.cap(limit);
        match limit {
            Limit::Concurrent => Refusal::Concurrent { max: cap },
            Limit::UserHour => Refusal::UserHour {
                limit: cap,
                retry_in,
            },
            Limit::UserDay => Refusal::UserDay {
                limit: cap,
                retry_in,
            },
            Limit::GlobalHour => Refusal::GlobalHour {
                limit: cap,
                retry_in,
            },
            Limit::GlobalDay => Refusal::GlobalDay {
                limit: cap,
                retry_in,
            },
            Limit::Destination => Refusal::Destination {
                number: to.display(),
                limit: cap,
                retry_in,
            },
        }
    }
}

/// One of the usage limits. Every ledger checks them in the order listed here, so a request over
/// several gets the same refusal wherever it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Calls live at once (`max_concurrent`).
    Concurrent,
    UserHour,
    UserDay,
    GlobalHour,
    GlobalDay,
    Destination,
}

impl Limit {
    /// How far back the limit counts; zero for the live-call cap, which counts the calls not
    /// ended, however old.
    pub fn window(self) -> Duration {
        match self {
            Self::Concurrent => Duration::zero(),
            Self::UserHour | Self::GlobalHour | Self::Destination => Duration::hours(1),
            Self::UserDay | Self::GlobalDay => Duration::days(1),
        }
    }
}

/// Whether the per-requester quotas apply: not to the operator's own ways in.
pub fn has_quota(origin: &Origin) -> bool {
    !origin.platform.is_operator()
}

/// The identity limits count against: platform + requester id.
pub fn requester_key(origin: &Origin) -> String {
    format!("{}:{}", origin.platform, origin.requester)
}

/// When each key placed its calls, for "N per window" limits.
///
/// Written by hand: the limits are counts over a sliding window ("10 calls in the last hour"),
/// which is what users are told; governor's GCRA (used by the dialer for pacing) smooths a
/// rate instead and would allow about twice the quota in the first hour.
#[derive(Debug, Default, Clone)]
pub struct WindowLog {
    times: HashMap<String, VecDeque<DateTime<Utc>>>,
}

/// The longest window any limit uses; older entries are dropped.
pub const LONGEST_WINDOW: Duration = Duration::days(1);

impl WindowLog {
    pub fn record(&mut self, key: &str, now: DateTime<Utc>) {
        let times = self.times.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|t| now - *t >= LONGEST_WINDOW) {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// `Some(wait)` when `key` already has `limit` entries within `window` before `now`.
    pub fn full(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        if limit == 0 {
            return Some(window);
        }
        let times = self.times.get(key)?;
        // Times are in order: the window's first entry is found by bisection, so a check
        // costs O(log n) however many calls the key made (the load bench's one requester
        // with 60,000 calls made it quadratic).
        let start = times.partition_point(|t| now - *t >= window);
        let recent = times.len() - start;
        if recent < limit as usize {
            return None;
        }
        // The oldest entry that must expire before one more fits.
        let oldest = times.get(times.len() - limit as usize)?;
        Some(*oldest + window - now)
    }

    /// Takes back the entry `record` made at `at` (a request that was accepted, then could
    /// not be queued: nothing was placed, so nothing counts).
    pub fn unrecord(&mut self, key: &str, at: DateTime<Utc>) {
        if let Some(times) = self.times.get_mut(key)
            && let Some(i) = times.iter().rposition(|t| *t == at)
        {
            times.remove(i);
        }
    }

    /// Drops keys with nothing inside the longest window (bounded memory).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.times
            .retain(|_, times| times.back().is_some_and(|t| now - *t < LONGEST_WINDOW));
    }
}

/// The one key of [`Usage::everyone`].
const EVERYONE: &str = "*";

/// Usage so far: per requester, per destination, all requests together, and the calls live
/// right now.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub users: WindowLog,
    pub destinations: WindowLog,
    /// Every accepted request, whoever asked (for the global caps).
    pub everyone: WindowLog,
    pub live: HashSet<String>,
}

impl Usage {
    pub fn active(&self) -> usize {
        self.live.len()
    }

    /// Records an accepted request.
    pub fn record(&mut self, origin: &Origin, to: &PhoneNumber, call_id: &str, now: DateTime<Utc>) {
        self.users.record(&requester_key(origin), now);
        self.destinations.record(to.e164(), now);
        self.everyone.record(EVERYONE, now);
        self.live.insert(call_id.to_owned());
    }

    /// Takes back what [`Usage::record`] counted for a request that placed nothing.
    pub fn unrecord(
        &mut self,
        origin: &Origin,
        to: &PhoneNumber,
        call_id: &str,
        at: DateTime<Utc>,
    ) {
        self.users.unrecord(&requester_key(origin), at);
        self.destinations.unrecord(to.e164(), at);
        self.everyone.unrecord(EVERYONE, at);
        self.live.remove(call_id);
    }

    pub fn ended(&mut self, call_id: &str) {
        self.live.remove(call_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy() -> Policy {
        Policy {
            open: false,
            access: [
                (
                    Platform::Telegram,
                    AllowList {
                        users: set(&["111"]),
                        chats: set(&["-100500"]),
                        teams: set(&[]),
                    },
                ),
                (
                    Platform::Slack,
                    AllowList {
                        users: set(&["U1"]),
                        chats: set(&["C1"]),
                        teams: set(&["T1"]),
                    },
                ),
                (
                    matrix(),
                    AllowList {
                        users: set(&["@ann:example.org"]),
                        chats: set(&["!room:example.org"]),
                        teams: set(&[]),
                    },
                ),
            ]
            .into(),
            countries: set(&["IN"]),
            allow_numbers: set(&["+14155550100"]),
            deny_numbers: set(&["+919876543219"]),
            limits: Limits {
                per_user_hour: 2,
                per_user_day: 3,
                per_destination_hour: 2,
                global_hour: 1000,
                global_day: 1000,
                max_concurrent: 5,
                message_max_chars: 20,
            },
        }
    }

    fn telegram(user: &str, chat: &str) -> Origin {
        let mut o = Origin::new(Platform::Telegram, user);
        o.chat = chat.into();
        o
    }

    fn slack(user: &str, channel: &str, team: &str) -> Origin {
        let mut o = Origin::new(Platform::Slack, user);
        o.chat = channel.into();
        o.team = Some(team.into());
        o
    }

    /// A platform core has no variant for.
    fn matrix() -> Platform {
        Platform::named("matrix").unwrap()
    }

    fn on_matrix(user: &str, room: &str) -> Origin {
        let mut o = Origin::new(matrix(), user);
        o.chat = room.into();
        o
    }

    fn num(e164: &str) -> PhoneNumber {
        PhoneNumber::from_e164(e164).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn check(
        p: &Policy,
        origin: &Origin,
        to: &str,
        usage: &Usage,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        p.check(
            &Request {
                origin,
                to: &num(to),
                message: None,
            },
            usage,
            now,
        )
    }

    #[test]
    fn identities_are_denied_by_default_and_told_their_id() {
        let p = policy();
        let u = Usage::default();
        let india = "+919876543210";
        assert!(check(&p, &telegram("111", "5"), india, &u, t0()).is_ok());
        assert!(
            check(&p, &telegram("222", "-100500"), india, &u, t0()).is_ok(),
            "allowed chat"
        );
        let refused = check(&p, &telegram("222", "5"), india, &u, t0()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "You're not allowed to place calls yet. Ask the admin to add your Telegram id 222."
        );
        assert_eq!(refused.kind(), RefusalKind::Identity);
        assert!(check(&p, &slack("U1", "C9", "T9"), india, &u, t0()).is_ok());
        assert!(check(&p, &slack("U9", "C1", "T9"), india, &u, t0()).is_ok());
        assert!(check(&p, &slack("U9", "C9", "T1"), india, &u, t0()).is_ok());
        assert_eq!(
            check(&p, &slack("U9", "C9", "T9"), india, &u, t0())
                .unwrap_err()
                .to_string(),
            "You're not allowed to place calls yet. Ask the admin to add your Slack user id U9."
        );
        let mut empty = policy();
        empty.access.remove(&Platform::Telegram);
        assert!(
            check(&empty, &telegram("111", "5"), india, &u, t0()).is_err(),
            "empty list refuses everyone"
        );
        let open = Policy {
            open: true,
            ..empty
        };
        assert!(check(&open, &telegram("999", "5"), india, &u, t0()).is_ok());
        assert!(
            check(&open, &telegram("999", "5"), "+4930901820", &u, t0()).is_err(),
            "open keeps destination rules"
        );
    }

    #[test]
    fn destinations_country_types_and_lists() {
        let p = policy();
        let u = Usage::default();
        let me = telegram("111", "5");
        let germany = check(&p, &me, "+4930901820", &u, t0()).unwrap_err();
        assert_eq!(
            germany.to_string(),
            "+49 30 901820 is in Germany; calls are allowed only to India."
        );
        assert_eq!(germany.kind(), RefusalKind::Request);
        assert!(
            check(&p, &me, "+14155550100", &u, t0()).is_ok(),
            "the allow-list overrides the country rule"
        );
        assert_eq!(
            check(&p, &me, "+919876543219", &u, t0())
                .unwrap_err()
                .to_string(),
            "Calling +91 98765 43219 is not allowed here."
        );
        let us = Policy {
            countries: ["US".to_owned()].into(),
            ..policy()
        };
        let premium = check(&us, &me, "+19005550123", &u, t0()).unwrap_err();
        assert_eq!(premium.code(), "number_type");
        assert!(premium.to_string().contains("premium-rate"), "{premium}");
        let gb = Policy {
            countries: ["GB".to_owned()].into(),
            ..policy()
        };
        let personal = check(&gb, &me, "+447012345678", &u, t0()).unwrap_err();
        assert!(
            personal.to_string().contains("personal-number"),
            "{personal}"
        );
    }

    #[test]
    fn every_refused_number_type_is_refused_in_an_allowed_country() {
        // libphonenumber's own example number of each type (PhoneNumberMetadata.xml).
        let cases = [
            ("IN", "+9118603451234", "shared-cost"),
            ("IN", "+911409305260", "universal access"),
            ("IN", "+911861123456789", "premium-rate"),
            ("GB", "+445612345678", "VoIP"),
            ("GB", "+447640123456", "pager"),
            ("GB", "+447012345678", "personal-number"),
            ("AU", "+611300123456", "shared-cost"),
        ];
        let me = telegram("111", "5");
        for (country, number, label) in cases {
            let p = Policy {
                countries: [country.to_owned()].into(),
                ..policy()
            };
            let refusal = check(&p, &me, number, &Usage::default(), t0()).unwrap_err();
            assert_eq!(refusal.code(), "number_type", "{number}: {refusal}");
            assert!(refusal.to_string().contains(label), "{number}: {refusal}");
        }
    }

    #[test]
    fn message_length_is_capped() {
        let p = policy();
        let me = telegram("111", "5");
        let to = num("+919876543210");
        let long = "x".repeat(21);
        let r = p
            .check(
                &Request {
                    origin: &me,
                    to: &to,
                    message: Some(&long),
                },
                &Usage::default(),
                t0(),
            )
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "Your message has 21 characters; the limit is 20. Please shorten it."
        );
    }

    #[test]
    fn per_user_limits_roll_over_with_the_clock() {
        let p = policy();
        let me = telegram("111", "5");
        let mut u = Usage::default();
        let mut now = t0();
        for (i, n) in ["+919876543210", "+919876543211"].iter().enumerate() {
            check(&p, &me, n, &u, now).unwrap();
            u.record(&me, &num(n), &format!("c{i}"), now);
            now += Duration::minutes(10);
        }
        let r = check(&p, &me, "+919876543212", &u, now).unwrap_err();
        assert_eq!(
            r.to_string(),
            "You have placed 2 calls in the last hour, the limit. Try again in 40 minutes."
        );
        assert_eq!(r.kind(), RefusalKind::Limit);
        now = t0() + Duration::minutes(61);
        check(&p, &me, "+919876543212", &u, now).unwrap();
        u.record(&me, &num("+919876543212"), "c2", now);
        // Three in a day is the daily limit, even after the hourly window rolled over.
        now += Duration::hours(2);
        let r = check(&p, &me, "+919876543213", &u, now).unwrap_err();
        assert_eq!(r.code(), "user_daily_limit");
        assert!(
            r.to_string().ends_with("Try again in 20 hours 59 min."),
            "{r}"
        );
        now = t0() + Duration::days(1);
        check(&p, &me, "+919876543213", &u, now).unwrap();
    }

    #[test]
    fn per_destination_and_concurrency_limits() {
        let p = policy();
        let mut u = Usage::default();
        let to = "+919876543210";
        for (i, who) in ["111", "112"].iter().enumerate() {
            u.record(&telegram(who, "-100500"), &num(to), &format!("c{i}"), t0());
        }
        let r = check(
            &p,
            &telegram("113", "-100500"),
            to,
            &u,
            t0() + Duration::minutes(1),
        )
        .unwrap_err();
        assert_eq!(
            r.to_string(),
            "+91 98765 43210 has already been called 2 times in the last hour. Try again in 59 minutes."
        );
        for i in 2..5 {
            u.record(
                &telegram(&format!("u{i}"), "-100500"),
                &num("+919876543211"),
                &format!("c{i}"),
                t0(),
            );
        }
        let r = check(&p, &telegram("111", "5"), "+919876543212", &u, t0()).unwrap_err();
        assert_eq!(r.code(), "concurrent_limit");
        u.ended("c0");
        assert!(check(&p, &telegram("114", "-100500"), "+919876543212", &u, t0()).is_ok());
    }

    #[test]
    fn a_request_taken_back_counts_against_no_limit() {
        let p = Policy {
            limits: Limits {
                global_hour: 1,
                ..policy().limits
            },
            ..policy()
        };
        let mut u = Usage::default();
        let o = telegram("111", "5");
        let to = num("+919876543210");
        u.record(&o, &to, "c0", t0());
        assert!(check(&p, &o, "+919876543210", &u, t0()).is_err());
        u.unrecord(&o, &to, "c0", t0());
        check(&p, &o, "+919876543210", &u, t0()).unwrap();
        assert_eq!(u.active(), 0);
    }

    #[test]
    fn global_caps_count_every_requester_and_platform() {
        let p = Policy {
            limits: Limits {
                global_hour: 3,
                global_day: 4,
                per_destination_hour: 100,
                ..policy().limits
            },
            ..policy()
        };
        let mut u = Usage::default();
        let origins = [
            telegram("111", "5"),
            Origin::new(Platform::Web, "web"),
            Origin::new(Platform::Cli, "cli"),
        ];
        for (i, o) in origins.iter().enumerate() {
            let now = t0() + Duration::minutes(i as i64);
            check(&p, o, "+919876543210", &u, now).unwrap();
            u.record(o, &num("+919876543210"), &format!("c{i}"), now);
            u.ended(&format!("c{i}"));
        }
        let r = check(
            &p,
            &Origin::new(Platform::Web, "web"),
            "+919876543211",
            &u,
            t0() + Duration::minutes(10),
        )
        .unwrap_err();
        assert_eq!(
            r.to_string(),
            "callbot has placed 3 calls in the last hour, the most it places for everyone together. Try again in 50 minutes."
        );
        assert_eq!(r.kind(), RefusalKind::Limit);
        let later = t0() + Duration::minutes(61);
        check(&p, &origins[2], "+919876543211", &u, later).unwrap();
        u.record(&origins[2], &num("+919876543211"), "c3", later);
        let r = check(
            &p,
            &origins[2],
            "+919876543212",
            &u,
            later + Duration::hours(2),
        )
        .unwrap_err();
        assert_eq!(r.code(), "global_daily_limit");
    }

    #[test]
    fn a_platform_core_does_not_know_has_its_allow_list_and_quotas() {
        let p = policy();
        let mut u = Usage::default();
        let india = "+919876543210";
        assert!(check(&p, &on_matrix("@ann:example.org", "!dm"), india, &u, t0()).is_ok());
        assert!(
            check(
                &p,
                &on_matrix("@bob:example.org", "!room:example.org"),
                india,
                &u,
                t0()
            )
            .is_ok(),
            "allowed room"
        );
        let stranger =
            check(&p, &on_matrix("@eve:example.org", "!dm"), india, &u, t0()).unwrap_err();
        assert_eq!(stranger.code(), "not_allowed");
        assert_eq!(
            stranger,
            Refusal::NotAllowed {
                platform: matrix(),
                id: "@eve:example.org".into()
            }
        );
        // Another platform's lists do not let a Matrix user in under the same id.
        let telegram_id = on_matrix("111", "-100500");
        assert!(check(&p, &telegram_id, india, &u, t0()).is_err());

        // Per-requester quotas: 2 an hour for Ann, whoever else calls.
        let ann = on_matrix("@ann:example.org", "!dm");
        for (i, n) in ["+919876543210", "+919876543211"].iter().enumerate() {
            check(&p, &ann, n, &u, t0()).unwrap();
            u.record(&ann, &num(n), &format!("m{i}"), t0());
            u.ended(&format!("m{i}"));
        }
        let r = check(&p, &ann, "+919876543213", &u, t0()).unwrap_err();
        assert_eq!(r.code(), "user_hourly_limit");
        // Keyed by platform and id: the same id on Telegram has its own quota.
        assert!(
            check(
                &p,
                &telegram("@ann:example.org", "-100500"),
                "+919876543213",
                &u,
                t0()
            )
            .is_ok()
        );
        // The operator's own ways in have no per-requester quota.
        for operator in [Platform::Web, Platform::Cli] {
            let me = Origin::new(operator, "@ann:example.org");
            for (i, n) in ["+919876543214", "+919876543215", "+919876543216"]
                .iter()
                .enumerate()
            {
                check(&p, &me, n, &u, t0()).unwrap();
                u.record(&me, &num(n), &format!("{operator}{i}"), t0());
                u.ended(&format!("{operator}{i}"));
            }
        }
    }

    #[test]
    fn describe_lists_every_platform_keyed() {
        let text = policy().describe();
        assert!(
            text.contains(
                "matrix:          users @ann:example.org; chats !room:example.org; teams none\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("slack:           users U1; chats C1; teams T1\n"),
            "{text}"
        );
        assert!(
            text.contains("telegram:        users 111; chats -100500; teams none\n"),
            "{text}"
        );
    }

    #[test]
    fn a_limit_of_zero_refuses_even_the_first_request() {
        let log = WindowLog::default();
        assert_eq!(
            log.full("a", 0, Duration::hours(1), t0()),
            Some(Duration::hours(1))
        );
    }

    #[test]
    fn window_log_prunes_old_keys() {
        let mut log = WindowLog::default();
        log.record("a", t0());
        log.prune(t0() + Duration::days(2));
        assert!(log.times.is_empty());
    }
}
