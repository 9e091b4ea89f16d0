/*
 * qraft/qraft.h: the whole public API. Include this, or only the headers of
 * the parts you use.
 */
#ifndef QRAFT_QRAFT_H
#define QRAFT_QRAFT_H

#include <qraft/assert.h>
#include <qraft/buf.h>
#include <qraft/core.h>
#include <qraft/crc32c.h>
#include <qraft/discovery.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/histogram.h>
#include <qraft/log.h>
#include <qraft/node.h>
#include <qraft/prng.h>
#include <qraft/probe.h>
#include <qraft/relay.h>
#include <qraft/storage.h>
#include <qraft/transport.h>
#include <qraft/types.h>
#include <qraft/varint.h>
#include <qraft/wire.h>
#include <qraft/version.h>

#endif
