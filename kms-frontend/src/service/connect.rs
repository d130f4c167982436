//! The connect protocol of a CloudHSM key store, as a sans-IO state machine. KMS logs in as
//! kmsuser on every active HSM and then rotates kmsuser's password to a new random one that
//! only it knows, so the password must be durable on KMS's side before the cluster has it and
//! after: a crash at any point must leave KMS knowing the cluster's password, either as the
//! store's current password or as the pending one a rotation was about to set.
//!
//! ```text
//! start -> Open{current, pending} --Opened(working)--> Save{working, pending: new}
//!            \--OpenFailed(code)--> Finish(code)        --Saved--> Rotate(new)
//!                                                                   --Rotated--> Save{new, none}
//!                                                                   --RotateFailed--> Finish(INTERNAL_ERROR)
//!                                                        --Saved--> Finish(ok)
//! any save --SaveFailed--> Finish(INTERNAL_ERROR)
//! ```
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

/// What came of a step.
#[derive(Debug)]
pub enum Event {
    /// Logged in; with this password.
    Opened(SecretString),
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
            (Phase::Opening, Event::Opened(working)) => (
                Phase::SavingPending,
                Step::Save {
                    current: working,
                    pending: Some(self.new.duplicate()),
                },
            ),
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
            (Phase::SavingRotated, Event::Saved) => (Phase::Done, Step::Finish(Ok(()))),
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
                        Event::Opened(current)
                    } else if pending
                        .as_ref()
                        .is_some_and(|p| p.expose() == world.cluster)
                    {
                        Event::Opened(pending.unwrap())
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
}
