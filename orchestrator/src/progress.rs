//! How long-running work reports what it does: bring-up and teardown steps,
//! and the output of image builds, through one trait so a command that does
//! both (`start`) reports both the same way.
//!
//! It only formats lines for people; it must never decide anything, and
//! never receive a secret (what it prints ends up on the operator's screen
//! and in CI logs).

/// Where progress goes (stderr for people, nothing for programs).
pub trait Progress: Send + Sync {
    /// One step of bring-up, teardown or a command.
    fn step(&self, message: &str);

    /// One line an image build printed (`image` is the image's short name).
    fn build_line(&self, image: &str, text: &str);
}

/// Progress lines on stderr: steps with the time since the command started,
/// build output prefixed with the image name.
#[derive(Debug)]
pub struct StderrProgress {
    started: std::time::Instant,
}

impl Default for StderrProgress {
    fn default() -> Self {
        StderrProgress {
            started: std::time::Instant::now(),
        }
    }
}

impl Progress for StderrProgress {
    fn step(&self, message: &str) {
        eprintln!(
            "bot-bottle: [{:5.2}s] {message}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn build_line(&self, image: &str, text: &str) {
        let t = text.trim_end();
        if !t.is_empty() {
            eprintln!("[{image}] {t}");
        }
    }
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _message: &str) {}

    fn build_line(&self, _image: &str, _text: &str) {}
}
