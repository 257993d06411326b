"""A real SMTP server for benchmarks (aiosmtpd): accepts every mail, records
"<recipient> <code>" per mail in a file, and counts them."""
import asyncio
import re
import sys

from aiosmtpd.controller import Controller

CODE = re.compile(rb"^    (\S.*)$", re.M)


class Sink:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        m = CODE.search(envelope.content)
        code = m.group(1).decode().strip() if m else "-"
        for rcpt in envelope.rcpt_tos:
            self.out.write(f"{rcpt} {code}\n")
        return "250 OK"


async def main(port, path):
    controller = Controller(Sink(path), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
