//! Criterion benches of the hot paths: parsing a chat message (grammar + libphonenumber),
//! verifying a Twilio signature, rendering TwiML, applying a status event to a stored call.
//! `cargo bench --bench hot_paths`; CI runs each once with `-- --test`.

use std::hint::black_box;
use std::time::Duration;

use callbot::calls::{CallStore, MemoryStore};
use callbot::core::call::{Applied, Call, CallStatus, Origin, Platform, StatusUpdate};
use callbot::core::command;
use callbot::core::phone::{PhoneNumber, Region};
use callbot::telephony::twilio::signature::{SignatureVerifier, sign};
use callbot::telephony::twilio::twiml;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MESSAGES: &[&str] = &[
    "Call to +91 9876543210",
    "please call +91 98765 43210 and say Your table is ready",
    "dial 098765 43210 say: the car is outside",
    "call +1 (415) 555-0100 \"the deploy is done\"",
    "good morning team, standup in 5",
    "status",
];

fn parsing(c: &mut Criterion) {
    let region = Region::parse("IN").unwrap();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(MESSAGES.len() as u64));
    g.bench_function("six typical messages", |b| {
        b.iter(|| {
            for m in MESSAGES {
                let _ = black_box(command::parse(black_box(m), region));
            }
        })
    });
    g.finish();
    // A number seen before (the same people call the same numbers; chats redeliver).
    c.bench_function("phone number, seen before (cached)", |b| {
        b.iter(|| PhoneNumber::parse(black_box("+91 98765 43210"), region))
    });
    // What bounds a new number: libphonenumber's parse + validate + format.
    let mut n = 0u32;
    c.bench_function("phone number, new each time (libphonenumber)", |b| {
        b.iter(|| {
            n = (n + 1) % 10_000_000;
            let written = format!("+91 98{n:08}");
            PhoneNumber::parse(black_box(&written), region)
        })
    });
    let mut n = 0u32;
    g_cold(c, region, &mut n);
    c.bench_function("grammar only (not a call)", |b| {
        b.iter(|| command::parse(black_box("good morning team, standup in 5"), region))
    });
}

/// The six messages again, each call request with a number never seen before.
fn g_cold(c: &mut Criterion, region: Region, n: &mut u32) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(MESSAGES.len() as u64));
    for m in [
        "Call to +91 98 01234567",
        "call +91 97 09999999",
        "dial 096 00000001",
        "call +91 (99) 76543210",
    ] {
        assert!(matches!(command::parse(m, region), Ok(Some(_))), "{m}");
    }
    g.bench_function("six typical messages, new numbers", |b| {
        b.iter(|| {
            *n = (*n + 1) % 10_000_000;
            let fresh = [
                format!("Call to +91 98{:08}", *n),
                format!("please call +91 97{:08} and say Your table is ready", *n),
                format!("dial 096{:08} say: the car is outside", *n),
                format!("call +91 (99) {:08} \"the deploy is done\"", *n),
            ];
            for m in fresh
                .iter()
                .map(String::as_str)
                .chain(MESSAGES[4..].iter().copied())
            {
                let _ = black_box(command::parse(black_box(m), region));
            }
        })
    });
    g.finish();
}

fn signature(c: &mut Criterion) {
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "ringing"),
        ("CallbackSource", "call-progress-events"),
        ("Direction", "outbound-api"),
        ("From", "+15005550006"),
        ("SequenceNumber", "1"),
        ("Timestamp", "Tue, 24 Nov 2026 10:00:00 +0000"),
        ("To", "+919876543210"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let path = "/webhooks/status?call_id=AbCdEfGhIjKlMnOpQrStUv";
    let url = format!("https://callbot.example.com{path}");
    let sig = sign("token-0123456789", &url, &params);
    let verifier = SignatureVerifier::new(
        "token-0123456789".to_owned().into(),
        "https://callbot.example.com",
    );
    c.bench_function("verify twilio signature", |b| {
        b.iter(|| assert!(verifier.verify(black_box(path), black_box(&params), black_box(&sig))))
    });
}

fn render(c: &mut Criterion) {
    c.bench_function("render twiml", |b| {
        b.iter(|| {
            twiml::render(
                black_box("Your table is ready & the <kitchen> says \"hi\""),
                "alice",
                "en-US",
            )
        })
    });
}

fn apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new(1_000_000, Duration::from_secs(3600));
    let to = PhoneNumber::from_e164("+919876543210").unwrap();
    let call = Call::new(
        to,
        "+15005550006",
        "hi".into(),
        "alice",
        "en-US",
        Origin::new(Platform::Web, "web"),
        Utc::now(),
    );
    let id = call.id.clone();
    rt.block_on(store.insert(call)).unwrap();
    let update = StatusUpdate {
        status: Some(CallStatus::Ringing),
        sequence: Some(1),
        ..StatusUpdate::default()
    };
    c.bench_function("apply status event in memory store", |b| {
        b.iter(|| {
            // A duplicate after the first: the common case of Twilio's repeated callbacks.
            rt.block_on(store.update(&id, &mut |call: &mut Call| {
                call.apply(black_box(&update), Utc::now())
            }))
            .unwrap()
            .map(|(_, a)| a == Applied::Ignored)
        })
    });
}

criterion_group!(benches, parsing, signature, render, apply);
criterion_main!(benches);
