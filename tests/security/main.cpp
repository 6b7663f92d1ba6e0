#define BOOST_TEST_MODULE hydra security tests
#include <boost/test/unit_test.hpp>
