/* streams.c -- the JetStream streams and the durable consumer ingest owns.
 * INGEST (file storage, limits retention, discard new, duplicate window from the settings)
 * holds every accepted record until the writer has stored it and for a while after (replay,
 * until the stream watch purges stored records to make room). EVENTS is
 * shared with other services: ingest creates it when it is missing and otherwise leaves it
 * alone. The management calls are synchronous, so they run on a connection of their own
 * without the service's event loop (the loop is not running yet at start-up). */
#include "evalbus/bus.h"
#include "evalbus/log.h"
#include "ingest_int.h"

#include <unistd.h>

static eb_status ensure_all(eb_bus *bus, const ingest_config *cfg)
{
    jsStreamConfig sc;
    jsConsumerConfig cc;
    const char *ingest_subjects[] = {INGEST_SUBJECT_PREFIX ">"};
    const char *event_subjects[] = {STORED_SUBJECT_PREFIX ">", "evalbus.v1.scores.>",
                                    "evalbus.v1.alerts.>"};
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    eb_status st;
    natsStatus s;

    jsStreamConfig_Init(&sc);
    sc.Name = INGEST_STREAM;
    sc.Subjects = ingest_subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_LimitsPolicy;
    sc.MaxBytes = cfg->stream_max_bytes;
    sc.MaxAge = INGEST_RECORD_DAYS * 24LL * 3600 * 1000000000LL;
    sc.Duplicates = cfg->stream_dupe_window_ms * 1000000LL;
    /* full: refuse new records (the publisher answers 503), never push out old ones, which
     * could be records not yet stored; the stream watch purges the stored ones to make room */
    sc.Discard = js_DiscardNew;
    sc.Replicas = cfg->stream_replicas;
    st = eb_bus_ensure_stream(bus, &sc);
    if (st != EB_OK)
        return st;

    s = js_GetStreamInfo(&si, eb_bus_js(bus), EVENTS_STREAM, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (s == NATS_NOT_FOUND) {
        jsStreamConfig_Init(&sc);
        sc.Name = EVENTS_STREAM;
        sc.Subjects = event_subjects;
        sc.SubjectsLen = 3;
        sc.Storage = js_FileStorage;
        sc.MaxAge = 7LL * 24 * 3600 * 1000000000LL;
        sc.MaxBytes = 1LL << 30;
        s = js_AddStream(&si, eb_bus_js(bus), &sc, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK && jerr != JSStreamNameExistErr)
            return eb_bus_error(s, "creating stream EVENTS");
    } else if (s != NATS_OK) {
        return eb_bus_error(s, "looking up stream EVENTS");
    }

    jsConsumerConfig_Init(&cc);
    cc.Durable = INGEST_WRITER_DURABLE;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = INGEST_WRITER_ACK_WAIT_MS * 1000000LL;
    cc.MaxAckPending = 50000;
    cc.DeliverPolicy = js_DeliverAll;
    cc.MaxRequestBatch = 5000;
    return eb_bus_ensure_consumer(bus, INGEST_STREAM, &cc);
}

eb_status ingest_streams_ensure_on(eb_bus *bus, const ingest_config *cfg)
{
    return ensure_all(bus, cfg);
}

static eb_status ensure_cb(eb_bus *bus, const void *arg)
{
    return ensure_all(bus, arg);
}

eb_status ingest_streams_ensure(const ingest_config *cfg, long long give_up_ms)
{
    return eb_bus_setup(cfg->svc.nats_url, "evalbus-ingest-setup", ensure_cb, cfg, give_up_ms);
}
