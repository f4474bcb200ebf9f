//! The built-in simulator end to end: signed callbacks over HTTP through the real webhook.

use std::time::Duration;

use callbot::core::call::CallStatus;

use crate::support::{QUIET, TestApp, exactly_one_final, settings};

#[tokio::test]
async fn simulator_outcome_follows_the_last_digit() {
    let app = TestApp::spawn(settings()).await;
    let cases = [
        ("call +91 98765 43215", CallStatus::Completed),
        ("call +91 98765 43210", CallStatus::Busy),
        ("call +91 98765 43211", CallStatus::NoAnswer),
        ("call +91 98765 43212", CallStatus::Failed),
    ];
    let mut ids = Vec::new();
    for (command, _) in &cases {
        ids.push(app.place(command).await);
    }
    for ((command, want), id) in cases.iter().zip(&ids) {
        let call = app.wait_final(id).await;
        assert_eq!(call.status, *want, "{command}");
        let visited: Vec<_> = call.history.iter().map(|(s, _)| *s).collect();
        match want {
            CallStatus::Completed => {
                assert_eq!(call.duration_secs, Some(7), "2 + last digit");
                assert_eq!(
                    visited,
                    [
                        CallStatus::Queued,
                        CallStatus::Initiated,
                        CallStatus::Ringing,
                        CallStatus::InProgress,
                        CallStatus::Completed
                    ]
                );
            }
            CallStatus::Failed => assert_eq!(call.sip_response_code, Some(404)),
            _ => assert_eq!(
                visited[..3],
                [
                    CallStatus::Queued,
                    CallStatus::Initiated,
                    CallStatus::Ringing
                ]
            ),
        }
        assert!(call.sid.is_some());
    }
}

#[tokio::test]
async fn simulator_chaos_duplicates_and_reorders_yet_one_final() {
    let mut s = settings();
    s.simulator.chaos = true;
    let app = TestApp::spawn(s).await;
    let mut events = app.service.subscribe();
    let id = app.place("call +91 98765 43219").await;
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_secs, Some(11));
    exactly_one_final(&mut events, &id, QUIET).await;
}

#[tokio::test]
async fn cancel_on_the_simulator_hangs_up_a_ringing_call() {
    let mut s = settings();
    s.simulator.speed = 0.2;
    let app = TestApp::spawn(s).await;
    let id = app.place("call +91 98765 43219").await;
    app.wait_for(&id, Duration::from_secs(5), |c| {
        c.status == CallStatus::Ringing
    })
    .await;
    let (status, body) = app.prompt(&format!("cancel {id}")).await;
    assert_eq!(status, 202, "{body}");
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Canceled);
}
