//! Threads for work that can run ahead of, or behind, the thread that
//! matters, at a lower priority: preparing bundles ([`crate::Prepared`]) on
//! a device while its replica applies earlier ones, and on a server while
//! its store thread stores earlier uploads; checkpointing write-ahead logs
//! (`store`). The thread that matters always has a core when it has work;
//! the background takes the cores left over.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// How far below the thread that starts them the background threads run
/// (a nice value: at 10, a thread gets about a tenth of the share of one
/// at 0 when both want a core).
pub const BACKGROUND_NICE: i32 = 10;

/// A few named threads that run the jobs given to them, taken in the order
/// given, at [`BACKGROUND_NICE`] below the thread that started them (on
/// Linux and Android, where the priority is a thread's own; elsewhere, on
/// iOS for one, it is the process's, and the threads keep it). The threads
/// end when this is dropped, once the jobs queued are done.
#[derive(Debug)]
pub struct Background {
    /// `None` if no thread could start.
    jobs: Option<Sender<Job>>,
}

impl Background {
    /// Starts `threads` threads (at least one) named `name`.
    pub fn start(name: &str, threads: usize) -> Background {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for _ in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || work(&queue));
            started += usize::from(spawned.is_ok());
        }
        Background {
            jobs: (started > 0).then_some(jobs),
        }
    }

    /// One thread per core, up to `most`.
    pub fn per_core(name: &str, most: usize) -> Background {
        Background::start(name, cores().min(most))
    }

    /// Runs `job` on one of the threads, or here, at once, if none runs
    /// (none could start, or each ended in a panic).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let refused = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            job();
        }
    }
}

/// The cores this process may use (at least one).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A thread's life: lower itself, then run jobs until the queue ends.
fn work(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Lowers the calling thread's priority by [`BACKGROUND_NICE`].
fn lower_priority() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // `None`: the calling thread, on Linux.
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if let Err(error) = rustix::process::setpriority_process(None, now + BACKGROUND_NICE) {
            tracing::debug!(%error, "background thread at its starter's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_on_the_threads_and_all_run_before_they_end() {
        let pool = Background::start("karmyq-test-bg", 3);
        let (tx, rx) = std::sync::mpsc::channel();
        for n in 0..50 {
            let tx = tx.clone();
            pool.run(move || {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((n, name)).expect("the test waits");
            });
        }
        drop(pool);
        drop(tx);
        let mut seen: Vec<(i32, Option<String>)> = rx.iter().collect();
        seen.sort();
        assert_eq!(seen.len(), 50);
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, (n, name))| *n == i as i32 && name.as_deref() == Some("karmyq-test-bg"))
        );
    }

    #[test]
    fn once_its_one_thread_died_of_a_panic_jobs_run_here() {
        let pool = Background::start("karmyq-test-bg", 1);
        pool.run(|| panic!("a job's bug"));
        // A job queued while the thread was dying is dropped with the queue
        // (its sender with it): queued again, it runs here.
        let ran_on = loop {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.run(move || {
                tx.send(std::thread::current().id())
                    .expect("the test waits")
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(id) => break id,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => continue,
                Err(e) => panic!("the job never ran: {e}"),
            }
        };
        assert_eq!(ran_on, std::thread::current().id());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn background_threads_run_below_their_starter() {
        let pool = Background::start("karmyq-test-bg", 2);
        let mine = rustix::process::getpriority_process(None).expect("a priority");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            pool.run(move || {
                let nice = rustix::process::getpriority_process(None).expect("a priority");
                tx.send(nice).expect("the test waits");
            });
        }
        drop(tx);
        let expected = (mine + BACKGROUND_NICE).min(19);
        assert!(rx.iter().all(|nice| nice == expected));
    }
}
