//! The stall switch: fault injection that makes an in-process node behave like a process sent
//! SIGSTOP. While it is on, the node keeps its listening socket and its open connections but
//! does nothing: it accepts no connection, reads no frame, runs no call, answers nothing and
//! replicates nothing. What arrives waits in the bounds that already exist (the kernel's accept
//! backlog and socket buffers, at most one held frame per connection, the actors' mailboxes)
//! and is handled once the switch is off again, under the usual deadline rule: a call whose
//! caller's deadline passed meanwhile is refused, a key generation acknowledged too late is
//! rolled back.
//!
//! The switch is a watch channel: [`StallSwitch`] on the handle's side, a [`StallGate`] in each
//! actor and in the listener, which look at it before they do anything.

use tokio::sync::watch;

/// The side that throws the switch (the node's handle).
#[derive(Debug)]
pub struct StallSwitch(watch::Sender<bool>);

/// The side that obeys it; cheap to clone.
#[derive(Debug, Clone)]
pub struct StallGate(watch::Receiver<bool>);

impl StallSwitch {
    /// A switch, off, and its first gate.
    pub fn new() -> (Self, StallGate) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), StallGate(rx))
    }

    /// Stalls the node, or lets it run again.
    pub fn set(&self, stalled: bool) {
        self.0.send_replace(stalled);
    }

    pub fn is_on(&self) -> bool {
        *self.0.borrow()
    }
}

impl StallGate {
    /// A gate that never closes, for a node run without a switch.
    pub fn open() -> Self {
        let (_, rx) = watch::channel(false);
        Self(rx)
    }

    pub fn is_stalled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the node may run (at once if it is not stalled, and for good if the
    /// switch is gone: a node whose handle is gone is stopping, not stalled).
    pub async fn running(mut self) {
        let _ = self.0.wait_for(|stalled| !stalled).await;
    }

    /// Resolves once the node is stalled; never if the switch is gone.
    pub async fn stalled(mut self) {
        if self.0.wait_for(|stalled| *stalled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_follows_the_switch_and_opens_when_it_is_gone() {
        let (switch, gate) = StallSwitch::new();
        assert!(!gate.is_stalled());
        gate.clone().running().await;
        switch.set(true);
        assert!(gate.is_stalled() && switch.is_on());
        gate.clone().stalled().await;
        let waiting = tokio::spawn(gate.clone().running());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a stalled gate holds");
        switch.set(false);
        assert!(waiting.await.is_ok());
        switch.set(true);
        drop(switch);
        gate.running().await;
        StallGate::open().running().await;
    }
}
