/* SPDX-License-Identifier: MIT */
/* AES-256-GCM page sealing and key files shared by seal.c and dseal.c (gcm-page.h). */
#include "gcm-page.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util.h"

int gcm_page_seal(EVP_CIPHER_CTX *enc, const uint8_t nonce[GCM_PAGE_NONCE_LEN], const void *aad, size_t aad_len,
		  const void *page, void *out, uint8_t ret_tag[GCM_PAGE_TAG_LEN])
{
	int n;

	if (EVP_EncryptInit_ex(enc, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(enc, NULL, &n, aad, (int)aad_len) != 1 ||
	    EVP_EncryptUpdate(enc, out, &n, page, PAGE_SIZE_4K) != 1 || n != (int)PAGE_SIZE_4K ||
	    EVP_EncryptFinal_ex(enc, (uint8_t *)out + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, GCM_PAGE_TAG_LEN, ret_tag) != 1)
		return -EIO;
	return 0;
}

int gcm_page_open(EVP_CIPHER_CTX *dec, const uint8_t nonce[GCM_PAGE_NONCE_LEN], const void *aad, size_t aad_len,
		  void *buf, const uint8_t tag[GCM_PAGE_TAG_LEN])
{
	int n;

	if (EVP_DecryptInit_ex(dec, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(dec, NULL, &n, aad, (int)aad_len) != 1 ||
	    EVP_DecryptUpdate(dec, buf, &n, buf, PAGE_SIZE_4K) != 1 || n != (int)PAGE_SIZE_4K ||
	    EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, GCM_PAGE_TAG_LEN, (void *)tag) != 1)
		return -EBADMSG;
	/* Final compares the tag (in constant time); any mismatch is one answer. */
	if (EVP_DecryptFinal_ex(dec, (uint8_t *)buf + n, &n) != 1)
		return -EBADMSG;
	return 0;
}

int gcm_page_read_key_file(const char *path, void *blob, size_t len)
{
	struct stat st;
	uint8_t extra;
	ssize_t n;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	/* Only a key this uid alone could have written is trusted. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
		return -EPERM;
	n = read(fd, blob, len);
	if (n == (ssize_t)len && read(fd, &extra, 1) == 0)
		return 0;
	OPENSSL_cleanse(blob, len);
	return n < 0 ? -errno : -EBADMSG;
}

int gcm_page_write_key_file(const char *path, const void *blob, size_t len)
{
	ssize_t n;
	int fd, r = 0;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	/* The umask cannot widen 0600, but a hostile one could narrow it to unreadable: set it exactly. */
	if (fchmod(fd, 0600) < 0)
		r = -errno;
	if (r == 0) {
		n = write(fd, blob, len);
		r = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		unlink(path);
	return r;
}
