// Lock annotations checked by clang's -Wthread-safety, and the mutex they
// name.
//
// A field guarded by a mutex is declared `T x GA_GUARDED_BY(mu_);` and a
// function that must be called with it held `void F() GA_REQUIRES(mu_);`.
// With clang, reading or writing `x` without `mu_` held is a compile error in
// the thread-safety build (GATEWAY_AGENT_THREAD_SAFETY, run by scripts/test);
// with other compilers the macros expand to nothing.
//
// std::mutex carries no annotations, so guarded state uses ga::Mutex and
// ga::MutexLock. ga::Mutex meets the Lockable requirements: a condition
// variable waits on it through std::condition_variable_any.
#pragma once

#include <mutex>

#if defined(__clang__)
#define GA_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define GA_THREAD_ANNOTATION(x)
#endif

#define GA_CAPABILITY(x) GA_THREAD_ANNOTATION(capability(x))
#define GA_SCOPED_CAPABILITY GA_THREAD_ANNOTATION(scoped_lockable)
#define GA_GUARDED_BY(x) GA_THREAD_ANNOTATION(guarded_by(x))
#define GA_PT_GUARDED_BY(x) GA_THREAD_ANNOTATION(pt_guarded_by(x))
#define GA_REQUIRES(...) GA_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define GA_EXCLUDES(...) GA_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define GA_ACQUIRE(...) GA_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define GA_RELEASE(...) GA_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define GA_TRY_ACQUIRE(...) GA_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define GA_RETURN_CAPABILITY(x) GA_THREAD_ANNOTATION(lock_returned(x))
#define GA_NO_THREAD_SAFETY_ANALYSIS GA_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace ga {

// A std::mutex the analysis knows as a capability. Not recursive.
class GA_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() GA_ACQUIRE() { mu_.lock(); }
  void unlock() GA_RELEASE() { mu_.unlock(); }
  bool try_lock() GA_TRY_ACQUIRE(true) { return mu_.try_lock(); }

  // For code that only runs with the lock held but cannot show it to the
  // analysis (a callback invoked under the lock): a no-op at run time.
  void AssertHeld() const GA_THREAD_ANNOTATION(assert_capability(this)) {}

 private:
  std::mutex mu_;
};

// Holds `mu` from construction to destruction, like std::lock_guard.
class GA_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) GA_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() GA_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

}  // namespace ga
