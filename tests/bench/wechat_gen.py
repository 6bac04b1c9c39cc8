#!/usr/bin/env python3
"""Pre-signed WeChat pushes for tests/bench/bench_wechat.sh (wrk replays them).

    wechat_gen.py ACCOUNT MODE APPID TOKEN AESKEY COUNT USERS TAG > requests.txt

One request per line: "<path>?<query>\\t<body>" (bodies have no newlines).  Every
push is a new text message (MsgId unique per TAG) from one of USERS followers, signed
now; in safe mode encrypted with a fresh random like WeChat does.
"""
import os
import sys
import time
import zlib

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import wechat_kit as wx  # noqa: E402


def main():
    key, mode, app_id, token, aes, count, users, tag = sys.argv[1:9]
    acct = wx.Account(key, mode=mode, app_id=app_id, token=token, aes=aes)
    base = (zlib.crc32(tag.encode()) % 100000) * 10 ** 9
    now = int(time.time())
    out = sys.stdout
    for i in range(int(count)):
        user = "oBench%06d%s" % (i % int(users), mode)
        xml = wx.text_message(acct, user, "bench message %s %d" % (tag, i), base + i,
                              create_time=now).replace("\n", "")
        qs, body = wx.signed_push(acct, xml, timestamp=now)
        out.write("/hooks/wechat/%s?%s\t%s\n" % (key, qs, body.decode().replace("\n", "")))


if __name__ == "__main__":
    main()
