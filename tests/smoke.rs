mod support;
use support::*;

#[test]
fn get_set_through_the_proxy() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut c = proxy.client();
    assert_eq!(text(&c.cmd(&["SET", "k", "v"])), "OK");
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");
}
