//! The connect protocol of a CloudHSM key store, as a sans-IO state machine. KMS logs in as
//! kmsuser on every active HSM and then rotates kmsuser's password to a new random one that
//! only it knows, so the password must be durable on KMS's side before the cluster has it and
//! after: a crash at any point must leave KMS knowing the cluster's password, either as the
//! store's current password or as the pending one a rotation was about to set.
//!
//! ```text
//! start -> Open{current, pending} --Opened(working, in step)--> Save{working, pending: new}
//!            |                                                    --Saved--> Rotate(new)
//!            |                                                    --Rotated--> Save{new, none}
//!            |                                                    --RotateFailed--> Finish(INTERNAL_ERROR)
//!            |                                                    --Saved--> Finish(ok)
//!            |--Opened(pending, out of step)--> Save{pending, none} --Saved--> Finish(ok)
//!            |--Opened(current, out of step)--> Finish(ok)
//!            \--OpenFailed(code)--> Finish(code)
//! any save --SaveFailed--> Finish(INTERNAL_ERROR)
//! ```
//!
//! The logins themselves are decided by [`decide_logins`]: the store connects if an HSM takes
//! one of its passwords; an HSM that refuses the password another HSM took is behind on a
//! password change (replication brings it), and is left out and logged in later in the
//! background, like one that does not answer. While the HSMs do not agree, the password is not
//! rotated (see [`Opened::in_step`]).
//!
//! The shell (`crate::key_stores`) runs each step's I/O and feeds back what came of it.

use hsmkms_common::secret::SecretString;

use super::connection_state::ConnectionErrorCode;

/// Where a connect attempt is.
#[derive(Debug)]
enum Phase {
    /// Logging in with the store's password (or the pending one).
    Opening,
    /// The password that worked, with the new one as pending, is being saved.
    SavingPending,
    /// The cluster is changing kmsuser's password to the new one.
    Rotating,
    /// The new password, as current, is being saved.
    SavingRotated,
    /// The pending password that worked, without rotating it, is being saved as current.
    SavingAdopted,
    /// Over.
    Done,
}

/// What the shell must do next.
#[derive(Debug)]
pub enum Step {
    /// Log in as kmsuser on every active HSM with `current`, or, if the cluster refuses it as
    /// wrong, with `pending` (a rotation that was interrupted before it was confirmed).
    Open {
        current: SecretString,
        pending: Option<SecretString>,
    },
    /// Make the store's passwords durable (if the attempt is still the store's).
    Save {
        current: SecretString,
        pending: Option<SecretString>,
    },
    /// Change kmsuser's password on the cluster, through the sessions just opened.
    Rotate(SecretString),
    /// The attempt is over: record its outcome.
    Finish(Result<(), ConnectionErrorCode>),
}

/// How one HSM answered kmsuser's login at a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAnswer {
    /// It took the store's current password.
    Current,
    /// It refused the current password as wrong and took the pending one.
    Pending,
    /// It answered, and refused the login: why, as a connection error code.
    Refused(ConnectionErrorCode),
    /// It did not answer (in time).
    Unreachable,
}

/// What the logins of a connect come to (see [`decide_logins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logins {
    /// The password that works is the pending one.
    pub pending: bool,
    /// The HSMs (indexes into the answers) whose sessions the store keeps: those that took it.
    pub keep: Vec<usize>,
    /// Every HSM that answered took it (see [`Opened::in_step`]).
    pub in_step: bool,
}

/// Decides, from how each HSM answered kmsuser's login, which password the store works with
/// and which sessions it keeps. The pending password wins if any HSM took it: it is the newer
/// one (a rotation decides it on an HSM that holds the current one), so an HSM that still takes
/// the current one is behind. HSMs that took the other password, refused, or did not answer
/// are left out; the store's background re-login tries them again once they have caught up.
/// Only if no HSM took either password does the connect fail: with the code of the first HSM
/// that refused, or NETWORK_ERRORS if none answered.
pub fn decide_logins(answers: &[LoginAnswer]) -> Result<Logins, ConnectionErrorCode> {
    let took = |wanted: LoginAnswer| -> Vec<usize> {
        (0..answers.len())
            .filter(|&i| answers[i] == wanted)
            .collect()
    };
    let (pending, keep) = match (took(LoginAnswer::Pending), took(LoginAnswer::Current)) {
        (pending, _) if !pending.is_empty() => (true, pending),
        (_, current) if !current.is_empty() => (false, current),
        _ => {
            return Err(answers
                .iter()
                .find_map(|a| match a {
                    LoginAnswer::Refused(code) => Some(*code),
                    _ => None,
                })
                .unwrap_or(ConnectionErrorCode::NetworkErrors))
        }
    };
    let in_step = answers
        .iter()
        .enumerate()
        .all(|(i, a)| keep.contains(&i) || *a == LoginAnswer::Unreachable);
    Ok(Logins {
        pending,
        keep,
        in_step,
    })
}

/// A connect's logins, as the shell reports them.
#[derive(Debug)]
pub struct Opened {
    /// The password that worked.
    pub password: SecretString,
    /// It is the pending one.
    pub pending: bool,
    /// Every HSM that answered took it. Only then is the password rotated: an HSM that is
    /// behind on a password change decides a change of its own at a version that may lose to
    /// the one it has not seen yet, and the cluster would end with a password KMS no longer
    /// has. Out of step, the store connects with the password that works and rotates at a
    /// later connect.
    pub in_step: bool,
}

/// What came of a step.
#[derive(Debug)]
pub enum Event {
    /// Logged in (see [`Opened`]).
    Opened(Opened),
    OpenFailed(ConnectionErrorCode),
    Saved,
    /// The save failed, or a later call overtook the attempt.
    SaveFailed,
    Rotated,
    RotateFailed,
}

/// One connect attempt.
#[derive(Debug)]
pub struct ConnectAttempt {
    phase: Phase,
    /// The password the rotation sets.
    new: SecretString,
}

impl ConnectAttempt {
    /// An attempt that will rotate kmsuser's password to `new`; its first step logs in with
    /// the store's `current` password (or the `pending` one).
    pub fn start(
        current: SecretString,
        pending: Option<SecretString>,
        new: SecretString,
    ) -> (Self, Step) {
        let attempt = Self {
            phase: Phase::Opening,
            new,
        };
        (attempt, Step::Open { current, pending })
    }

    /// The next step, given what came of the last one. An event that does not fit the phase
    /// (a bug in the shell) ends the attempt as an internal error rather than guessing.
    pub fn next(&mut self, event: Event) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let (phase, step) = match (phase, event) {
            (Phase::Opening, Event::Opened(opened)) if opened.in_step => (
                Phase::SavingPending,
                Step::Save {
                    current: opened.password,
                    pending: Some(self.new.duplicate()),
                },
            ),
            // Some HSM is behind on a password change: no rotation this time. A pending
            // password that worked becomes current (the one before it can no longer win); the
            // current one that worked leaves the store's passwords as they are.
            (Phase::Opening, Event::Opened(opened)) if opened.pending => (
                Phase::SavingAdopted,
                Step::Save {
                    current: opened.password,
                    pending: None,
                },
            ),
            (Phase::Opening, Event::Opened(_)) => (Phase::Done, Step::Finish(Ok(()))),
            (Phase::Opening, Event::OpenFailed(code)) => (Phase::Done, Step::Finish(Err(code))),
            (Phase::SavingPending, Event::Saved) => {
                (Phase::Rotating, Step::Rotate(self.new.duplicate()))
            }
            // The cluster may or may not have the new password: the store keeps it as
            // pending, and the next connect tries it if the current one is refused.
            (Phase::Rotating, Event::RotateFailed) => (Phase::Done, internal()),
            (Phase::Rotating, Event::Rotated) => (
                Phase::SavingRotated,
                Step::Save {
                    current: self.new.duplicate(),
                    pending: None,
                },
            ),
            (Phase::SavingRotated | Phase::SavingAdopted, Event::Saved) => {
                (Phase::Done, Step::Finish(Ok(())))
            }
            _ => (Phase::Done, internal()),
        };
        self.phase = phase;
        step
    }
}

fn internal() -> Step {
    Step::Finish(Err(ConnectionErrorCode::InternalError))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's passwords as KMS persisted them, and kmsuser's password on the cluster.
    #[derive(Debug, Clone)]
    struct World {
        current: String,
        pending: Option<String>,
        cluster: String,
    }

    /// Where to make the shell's I/O fail.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// The cluster refuses the login (wrong password, say).
        Open,
        /// The n-th save fails (1 or 2).
        Save(u8),
        /// The rotation fails before the cluster changed the password.
        RotateBefore,
        /// The rotation changed the password but its answer was lost.
        RotateAfter,
    }

    /// Runs one attempt against `world` with `fault`, checking after every step that KMS can
    /// still log in (its current or pending password is the cluster's): a crash there would
    /// lose nothing. Returns the outcome.
    fn run(world: &mut World, fault: Fault, new: &str) -> Result<(), ConnectionErrorCode> {
        let (mut attempt, mut step) = ConnectAttempt::start(
            SecretString::new(world.current.clone()),
            world.pending.clone().map(SecretString::new),
            SecretString::new(new),
        );
        let mut saves = 0;
        loop {
            assert!(
                world.current == world.cluster || world.pending.as_ref() == Some(&world.cluster),
                "KMS lost the cluster's password: {world:?}"
            );
            let event = match step {
                Step::Open { current, pending } => {
                    if fault == Fault::Open {
                        Event::OpenFailed(ConnectionErrorCode::InvalidCredentials)
                    } else if current.expose() == world.cluster {
                        Event::Opened(Opened {
                            password: current,
                            pending: false,
                            in_step: true,
                        })
                    } else if pending
                        .as_ref()
                        .is_some_and(|p| p.expose() == world.cluster)
                    {
                        Event::Opened(Opened {
                            password: pending.unwrap(),
                            pending: true,
                            in_step: true,
                        })
                    } else {
                        Event::OpenFailed(ConnectionErrorCode::InvalidCredentials)
                    }
                }
                Step::Save { current, pending } => {
                    saves += 1;
                    if fault == Fault::Save(saves) {
                        Event::SaveFailed
                    } else {
                        world.current = current.expose().to_string();
                        world.pending = pending.map(|p| p.expose().to_string());
                        Event::Saved
                    }
                }
                Step::Rotate(password) => match fault {
                    Fault::RotateBefore => Event::RotateFailed,
                    Fault::RotateAfter => {
                        world.cluster = password.expose().to_string();
                        Event::RotateFailed
                    }
                    _ => {
                        world.cluster = password.expose().to_string();
                        Event::Rotated
                    }
                },
                Step::Finish(outcome) => return outcome,
            };
            step = attempt.next(event);
        }
    }

    #[test]
    fn a_connect_rotates_the_password_and_kms_knows_it_at_every_step() {
        let mut world = World {
            current: "initial".into(),
            pending: None,
            cluster: "initial".into(),
        };
        assert_eq!(run(&mut world, Fault::None, "rotated1"), Ok(()));
        assert_eq!(world.cluster, "rotated1");
        assert_eq!(world.current, "rotated1");
        assert_eq!(world.pending, None);
    }

    #[test]
    fn whatever_fails_kms_still_knows_the_password_and_the_next_connect_works() {
        for fault in [
            Fault::Open,
            Fault::Save(1),
            Fault::Save(2),
            Fault::RotateBefore,
            Fault::RotateAfter,
        ] {
            let mut world = World {
                current: "initial".into(),
                pending: None,
                cluster: "initial".into(),
            };
            let outcome = run(&mut world, fault, "rotated1");
            assert!(outcome.is_err(), "{fault:?}");
            // The next attempt, with no fault, connects and ends with one current password.
            assert_eq!(
                run(&mut world, Fault::None, "rotated2"),
                Ok(()),
                "{fault:?}"
            );
            assert_eq!(world.cluster, "rotated2", "{fault:?}");
            assert_eq!(world.current, "rotated2", "{fault:?}");
            assert_eq!(world.pending, None, "{fault:?}");
        }
    }

    #[test]
    fn a_login_refused_ends_the_attempt_with_its_code_and_changes_nothing() {
        let mut world = World {
            current: "wrong".into(),
            pending: None,
            cluster: "right".into(),
        };
        // (The invariant does not hold here by construction: KMS never knew the password.)
        let (mut attempt, step) = ConnectAttempt::start(
            SecretString::new(world.current.clone()),
            None,
            SecretString::new("new"),
        );
        assert!(matches!(step, Step::Open { .. }));
        let step = attempt.next(Event::OpenFailed(ConnectionErrorCode::InvalidCredentials));
        assert!(matches!(
            step,
            Step::Finish(Err(ConnectionErrorCode::InvalidCredentials))
        ));
        world.pending = None;
        assert_eq!(world.current, "wrong");
    }

    #[test]
    fn an_event_out_of_turn_ends_the_attempt_as_an_internal_error() {
        let (mut attempt, _) =
            ConnectAttempt::start(SecretString::new("a"), None, SecretString::new("b"));
        assert!(matches!(
            attempt.next(Event::Rotated),
            Step::Finish(Err(ConnectionErrorCode::InternalError))
        ));
        // And stays over.
        assert!(matches!(
            attempt.next(Event::Saved),
            Step::Finish(Err(ConnectionErrorCode::InternalError))
        ));
    }

    /// How a cluster's HSMs answer a login with `current` (then `pending`): each holds the
    /// password given, or is `None` if it does not answer.
    fn answers(current: &str, pending: Option<&str>, hsms: &[Option<&str>]) -> Vec<LoginAnswer> {
        hsms.iter()
            .map(|hsm| match hsm {
                None => LoginAnswer::Unreachable,
                Some(p) if *p == current => LoginAnswer::Current,
                Some(p) if Some(*p) == pending => LoginAnswer::Pending,
                Some(_) => LoginAnswer::Refused(ConnectionErrorCode::InvalidCredentials),
            })
            .collect()
    }

    #[test]
    fn an_hsm_behind_on_a_password_change_is_left_out_not_a_reason_to_fail() {
        // The rotation reached HSM 0 but not yet HSM 1: the store connects on HSM 0.
        let logins = decide_logins(&answers("new", None, &[Some("new"), Some("old")])).unwrap();
        assert_eq!(
            logins,
            Logins {
                pending: false,
                keep: vec![0],
                in_step: false
            }
        );
        // Whichever HSM comes first.
        let logins = decide_logins(&answers("new", None, &[Some("old"), Some("new")])).unwrap();
        assert_eq!(logins.keep, vec![1]);
        assert!(!logins.in_step);
    }

    #[test]
    fn the_pending_password_wins_over_the_current_one_an_hsm_behind_still_takes() {
        // An interrupted rotation reached HSM 1 only: HSM 0 still takes the current password,
        // but the pending one is newer, and it is what the cluster converges on.
        let logins = decide_logins(&answers("p1", Some("p2"), &[Some("p1"), Some("p2")])).unwrap();
        assert_eq!(
            logins,
            Logins {
                pending: true,
                keep: vec![1],
                in_step: false
            }
        );
        let logins = decide_logins(&answers("p1", Some("p2"), &[Some("p2"), Some("p2")])).unwrap();
        assert_eq!(
            logins,
            Logins {
                pending: true,
                keep: vec![0, 1],
                in_step: true
            }
        );
    }

    #[test]
    fn an_hsm_that_does_not_answer_leaves_the_cluster_in_step() {
        let logins = decide_logins(&answers("p", None, &[None, Some("p")])).unwrap();
        assert_eq!(
            logins,
            Logins {
                pending: false,
                keep: vec![1],
                in_step: true
            }
        );
    }

    #[test]
    fn a_connect_fails_only_if_no_hsm_takes_a_password() {
        assert_eq!(
            decide_logins(&answers("wrong", None, &[Some("right"), Some("right")])),
            Err(ConnectionErrorCode::InvalidCredentials)
        );
        // The cluster's refusal says more than an HSM that did not answer.
        assert_eq!(
            decide_logins(&answers("wrong", None, &[None, Some("right")])),
            Err(ConnectionErrorCode::InvalidCredentials)
        );
        assert_eq!(
            decide_logins(&[
                LoginAnswer::Refused(ConnectionErrorCode::UserLockedOut),
                LoginAnswer::Refused(ConnectionErrorCode::InvalidCredentials),
            ]),
            Err(ConnectionErrorCode::UserLockedOut)
        );
        assert_eq!(
            decide_logins(&answers("p", None, &[None, None])),
            Err(ConnectionErrorCode::NetworkErrors)
        );
        assert_eq!(decide_logins(&[]), Err(ConnectionErrorCode::NetworkErrors));
    }

    #[test]
    fn out_of_step_a_connect_does_not_rotate_and_keeps_a_password_the_cluster_has() {
        // The current password worked, an HSM is behind: nothing to save, nothing rotated.
        let (mut attempt, _) = ConnectAttempt::start(
            SecretString::new("current"),
            Some(SecretString::new("pending")),
            SecretString::new("new"),
        );
        let step = attempt.next(Event::Opened(Opened {
            password: SecretString::new("current"),
            pending: false,
            in_step: false,
        }));
        assert!(matches!(step, Step::Finish(Ok(()))), "{step:?}");

        // The pending password worked: it becomes current, and nothing is rotated.
        let (mut attempt, _) = ConnectAttempt::start(
            SecretString::new("current"),
            Some(SecretString::new("pending")),
            SecretString::new("new"),
        );
        let step = attempt.next(Event::Opened(Opened {
            password: SecretString::new("pending"),
            pending: true,
            in_step: false,
        }));
        match step {
            Step::Save { current, pending } => {
                assert_eq!(current.expose(), "pending");
                assert!(pending.is_none());
            }
            other => panic!("expected a save, got {other:?}"),
        }
        assert!(matches!(attempt.next(Event::Saved), Step::Finish(Ok(()))));
    }
}
