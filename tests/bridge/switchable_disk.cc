#define FUSE_USE_VERSION 30
#include "switchable_disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace ga::testing {

namespace {

SwitchableDisk& Disk() {
  return *static_cast<SwitchableDisk*>(fuse_get_context()->private_data);
}

std::string Real(const char* path) {
  return Disk().backing().string() + path;
}

// -errno when `rc` is -1, else 0.
int Check(int rc) {
  return rc == -1 ? -errno : 0;
}

#define GA_REFUSE_WHILE_READ_ONLY()    \
  if (int refused = Disk().Refuse()) { \
    return refused;                    \
  }

void* Init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 1;       // the agent notices files replaced by their inode
  cfg->hard_remove = 1;   // no .fuse_hidden files for unlinked open files
  cfg->kernel_cache = 1;  // every change goes through here: the cache stays true
  return fuse_get_context()->private_data;
}

int GetAttr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (fi != nullptr) return Check(fstat(static_cast<int>(fi->fh), st));
  return Check(lstat(Real(path).c_str(), st));
}

int Access(const char* path, int mask) {
  if ((mask & W_OK) && Disk().read_only()) return -EROFS;
  return Check(access(Real(path).c_str(), mask));
}

int ReadLink(const char* path, char* buf, size_t size) {
  ssize_t n = readlink(Real(path).c_str(), buf, size - 1);
  if (n == -1) return -errno;
  buf[n] = '\0';
  return 0;
}

int ReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
            fuse_readdir_flags) {
  DIR* d = opendir(Real(path).c_str());
  if (d == nullptr) return -errno;
  while (dirent* e = readdir(d)) {
    struct stat st {};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (fill(buf, e->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  closedir(d);
  return 0;
}

int MkDir(const char* path, mode_t mode) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(mkdir(Real(path).c_str(), mode));
}

int Unlink(const char* path) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(unlink(Real(path).c_str()));
}

int RmDir(const char* path) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(rmdir(Real(path).c_str()));
}

int SymLink(const char* from, const char* to) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(symlink(from, Real(to).c_str()));
}

int Rename(const char* from, const char* to, unsigned int flags) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(renameat2(AT_FDCWD, Real(from).c_str(), AT_FDCWD, Real(to).c_str(), flags));
}

int Link(const char* from, const char* to) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(link(Real(from).c_str(), Real(to).c_str()));
}

int ChMod(const char* path, mode_t mode, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  if (fi != nullptr) return Check(fchmod(static_cast<int>(fi->fh), mode));
  return Check(chmod(Real(path).c_str(), mode));
}

int ChOwn(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  if (fi != nullptr) return Check(fchown(static_cast<int>(fi->fh), uid, gid));
  return Check(lchown(Real(path).c_str(), uid, gid));
}

int Truncate(const char* path, off_t size, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  if (fi != nullptr) return Check(ftruncate(static_cast<int>(fi->fh), size));
  return Check(truncate(Real(path).c_str(), size));
}

int UTimeNs(const char* path, const timespec tv[2], fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  if (fi != nullptr) return Check(futimens(static_cast<int>(fi->fh), tv));
  return Check(utimensat(AT_FDCWD, Real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

int Create(const char* path, mode_t mode, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  int fd = open(Real(path).c_str(), fi->flags, mode);
  if (fd == -1) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  fi->keep_cache = 1;
  return 0;
}

int Open(const char* path, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    GA_REFUSE_WHILE_READ_ONLY();
  }
  int fd = open(Real(path).c_str(), fi->flags);
  if (fd == -1) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  fi->keep_cache = 1;
  return 0;
}

int Read(const char*, char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  ssize_t n = pread(static_cast<int>(fi->fh), buf, size, offset);
  return n == -1 ? -errno : static_cast<int>(n);
}

int Write(const char*, const char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  ssize_t n = pwrite(static_cast<int>(fi->fh), buf, size, offset);
  return n == -1 ? -errno : static_cast<int>(n);
}

int StatFs(const char* path, struct statvfs* st) {
  return Check(statvfs(Real(path).c_str(), st));
}

int Release(const char*, fuse_file_info* fi) {
  close(static_cast<int>(fi->fh));
  return 0;
}

// Nothing is ever pending here (writes go straight through): as on a disk
// remounted read-only, syncing what is already written succeeds.
int FSync(const char*, int datasync, fuse_file_info* fi) {
  int fd = static_cast<int>(fi->fh);
  return Check(datasync ? fdatasync(fd) : fsync(fd));
}

int FAllocate(const char*, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  GA_REFUSE_WHILE_READ_ONLY();
  return Check(fallocate(static_cast<int>(fi->fh), mode, offset, length));
}

fuse_operations Operations() {
  fuse_operations ops{};
  ops.init = Init;
  ops.getattr = GetAttr;
  ops.access = Access;
  ops.readlink = ReadLink;
  ops.readdir = ReadDir;
  ops.mkdir = MkDir;
  ops.unlink = Unlink;
  ops.rmdir = RmDir;
  ops.symlink = SymLink;
  ops.rename = Rename;
  ops.link = Link;
  ops.chmod = ChMod;
  ops.chown = ChOwn;
  ops.truncate = Truncate;
  ops.utimens = UTimeNs;
  ops.create = Create;
  ops.open = Open;
  ops.read = Read;
  ops.write = Write;
  ops.statfs = StatFs;
  ops.release = Release;
  ops.fsync = FSync;
  ops.fallocate = FAllocate;
  return ops;
}

}  // namespace

Result<std::unique_ptr<SwitchableDisk>> SwitchableDisk::Mount(const std::filesystem::path& backing,
                                                              const std::filesystem::path& at) {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    return Unavailable("/dev/fuse: " + std::string(strerror(errno)));
  }
  std::unique_ptr<SwitchableDisk> disk(new SwitchableDisk());
  disk->backing_ = backing;
  disk->at_ = at;
  std::error_code ec;
  std::filesystem::create_directories(backing, ec);
  std::filesystem::create_directories(at, ec);
  chmod(backing.c_str(), 0700);
  static const fuse_operations kOperations = Operations();
  char name[] = "switchable-disk";
  char* argv[] = {name, nullptr};
  fuse_args args = FUSE_ARGS_INIT(1, argv);
  disk->fuse_ = fuse_new(&args, &kOperations, sizeof kOperations, disk.get());
  fuse_opt_free_args(&args);  // fuse_new may have added to them
  if (disk->fuse_ == nullptr) return Internal("fuse_new failed");
  if (fuse_mount(disk->fuse_, at.c_str()) != 0) {
    fuse_destroy(disk->fuse_);
    disk->fuse_ = nullptr;
    return Unavailable("mounting a FUSE file system at " + at.string() + " failed");
  }
  disk->loop_ = std::thread([f = disk->fuse_] { fuse_loop_mt(f, 0); });
  struct stat st {};
  if (stat(at.c_str(), &st) != 0) return Internal("stat " + at.string() + " after mounting");
  disk->dev_ = st.st_dev;
  return disk;
}

SwitchableDisk::~SwitchableDisk() {
  if (fuse_ == nullptr) return;
  fuse_exit(fuse_);
  fuse_unmount(fuse_);  // lazily, as root
  // Ends the connection even while some process still holds a file there,
  // so that the loop's read returns.
  std::ofstream("/sys/fs/fuse/connections/" + std::to_string(minor(dev_)) + "/abort") << "1";
  loop_.join();
  fuse_destroy(fuse_);
}

}  // namespace ga::testing
